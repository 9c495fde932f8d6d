// Package api holds Strata's API definition (strata/v1) and its OpenAPI
// description.
package api

import _ "embed"

// OpenAPI is the OpenAPI (Swagger 2.0) description of the REST/JSON API,
// generated from strata/v1/strata.proto and strata/v1/http.yaml.
//
//go:embed strata.swagger.json
var OpenAPI []byte
