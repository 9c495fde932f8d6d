module github.com/strata-storage/strata

go 1.26.8
