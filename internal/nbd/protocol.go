package nbd

// Wire constants of the NBD protocol (doc/proto.md in the NetworkBlockDevice/nbd
// repository). Every number is big-endian on the wire.

const (
	nbdMagic       = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic       = 0x49484156454F5054 // "IHAVEOPT"
	repMagic       = 0x0003e889045565a9 // option reply
	requestMagic   = 0x25609513
	simpleRepMagic = 0x67446698
)

// Handshake flags (server) and client flags.
const (
	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1

	clientFlagFixedNewstyle = 1 << 0
	clientFlagNoZeroes      = 1 << 1
	clientFlagsKnown        = clientFlagFixedNewstyle | clientFlagNoZeroes
)

// Transmission flags.
const (
	flagHasFlags        = 1 << 0
	flagReadOnly        = 1 << 1
	flagSendFlush       = 1 << 2
	flagSendFUA         = 1 << 3
	flagRotational      = 1 << 4
	flagSendTrim        = 1 << 5
	flagSendWriteZeroes = 1 << 6
	flagSendDF          = 1 << 7
	flagCanMultiConn    = 1 << 8
	flagSendResize      = 1 << 9
	flagSendCache       = 1 << 10
	flagSendFastZero    = 1 << 11
)

// Options.
const (
	optExportName      = 1
	optAbort           = 2
	optList            = 3
	optPeekExport      = 4
	optStartTLS        = 5
	optInfo            = 6
	optGo              = 7
	optStructuredReply = 8
	optListMetaContext = 9
	optSetMetaContext  = 10
	optExtendedHeaders = 11
)

// Option reply types.
const (
	repAck    = 1
	repServer = 2
	repInfo   = 3

	repFlagError       = 1 << 31
	repErrUnsup        = repFlagError | 1
	repErrPolicy       = repFlagError | 2
	repErrInvalid      = repFlagError | 3
	repErrPlatform     = repFlagError | 4
	repErrTLSReqd      = repFlagError | 5
	repErrUnknown      = repFlagError | 6
	repErrShutdown     = repFlagError | 7
	repErrBlockSizeReq = repFlagError | 8
	repErrTooBig       = repFlagError | 9
)

// Information types of NBD_REP_INFO.
const (
	infoExport      = 0
	infoName        = 1
	infoDescription = 2
	infoBlockSize   = 3
)

// Commands.
const (
	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdCache       = 5
	cmdWriteZeroes = 6
	cmdBlockStatus = 7
)

// Command flags.
const (
	cmdFlagFUA      = 1 << 0
	cmdFlagNoHole   = 1 << 1
	cmdFlagDF       = 1 << 2
	cmdFlagReqOne   = 1 << 3
	cmdFlagFastZero = 1 << 4
)

// Error values of simple replies. They are the Linux errno numbers, but the
// protocol fixes them, so they are spelt out rather than taken from syscall.
const (
	errPerm      = 1
	errIO        = 5
	errNoMem     = 12
	errInval     = 22
	errNoSpc     = 28
	errOverflow  = 75
	errNotSup    = 95
	errShutdown  = 108
	requestBytes = 28 // request header: magic, flags, type, handle, offset, length
	replyBytes   = 16 // simple reply header: magic, error, handle
)

// Size constraints advertised with NBD_INFO_BLOCK_SIZE. The backend takes
// any offset and length, so the minimum is 1; 4 KiB is the chain's block.
const (
	minBlockSize       = 1
	preferredBlockSize = 4096
	// MaxPayload is the largest NBD_CMD_READ or NBD_CMD_WRITE the server
	// accepts (32 MiB, the size every client honours).
	MaxPayload = 32 << 20
)

// maxOptionLength caps the data of one handshake option. The largest
// legitimate option is NBD_OPT_GO: a name of at most 4096 bytes and a short
// list of information requests.
const maxOptionLength = 64 << 10

// maxStringLength is the protocol's limit on names and messages.
const maxStringLength = 4096
