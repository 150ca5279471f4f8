package nbd

import (
	"encoding/binary"
	"fmt"
)

// Wire constants and layouts of the NBD protocol. Section names (§) refer to
// doc/proto.md of github.com/NetworkBlockDevice/nbd. Every integer on the
// wire is unsigned and big endian (§Conventions).

// Magic numbers.
const (
	magicInit        uint64 = 0x4e42444d41474943 // "NBDMAGIC" (§Newstyle negotiation)
	magicOpts        uint64 = 0x49484156454F5054 // "IHAVEOPT" (§Newstyle negotiation)
	magicOptReply    uint64 = 0x3e889045565a9    // option reply (§Fixed newstyle negotiation)
	magicRequest     uint32 = 0x25609513         // NBD_REQUEST_MAGIC (§Request message)
	magicSimpleReply uint32 = 0x67446698         // NBD_SIMPLE_REPLY_MAGIC (§Simple reply message)
	magicStructReply uint32 = 0x668e33ef         // NBD_STRUCTURED_REPLY_MAGIC (§Structured reply chunk message)
	magicExtRequest  uint32 = 0x21e41c71         // NBD_EXTENDED_REQUEST_MAGIC, reserved, not supported (§Reserved Magic values)
	magicExtReply    uint32 = 0x6e8a278c         // NBD_EXTENDED_REPLY_MAGIC, reserved, not supported
)

// Handshake flags, sent by the server (§Handshake flags).
const (
	flagFixedNewstyle uint16 = 1 << 0 // NBD_FLAG_FIXED_NEWSTYLE
	flagNoZeroes      uint16 = 1 << 1 // NBD_FLAG_NO_ZEROES
)

// Client flags, sent by the client after the handshake flags (§Client flags).
const (
	clientFlagFixedNewstyle uint32 = 1 << 0 // NBD_FLAG_C_FIXED_NEWSTYLE
	clientFlagNoZeroes      uint32 = 1 << 1 // NBD_FLAG_C_NO_ZEROES
	clientFlagsKnown               = clientFlagFixedNewstyle | clientFlagNoZeroes
)

// Transmission flags (§Transmission flags).
const (
	flagHasFlags        uint16 = 1 << 0  // NBD_FLAG_HAS_FLAGS
	flagReadOnly        uint16 = 1 << 1  // NBD_FLAG_READ_ONLY
	flagSendFlush       uint16 = 1 << 2  // NBD_FLAG_SEND_FLUSH
	flagSendFUA         uint16 = 1 << 3  // NBD_FLAG_SEND_FUA
	flagRotational      uint16 = 1 << 4  // NBD_FLAG_ROTATIONAL
	flagSendTrim        uint16 = 1 << 5  // NBD_FLAG_SEND_TRIM
	flagSendWriteZeroes uint16 = 1 << 6  // NBD_FLAG_SEND_WRITE_ZEROES
	flagSendDF          uint16 = 1 << 7  // NBD_FLAG_SEND_DF
	flagCanMultiConn    uint16 = 1 << 8  // NBD_FLAG_CAN_MULTI_CONN
	flagSendResize      uint16 = 1 << 9  // NBD_FLAG_SEND_RESIZE (experimental, never set)
	flagSendCache       uint16 = 1 << 10 // NBD_FLAG_SEND_CACHE (never set)
	flagSendFastZero    uint16 = 1 << 11 // NBD_FLAG_SEND_FAST_ZERO (never set)
)

// Option types (§Option types).
const (
	optExportName      uint32 = 1  // NBD_OPT_EXPORT_NAME
	optAbort           uint32 = 2  // NBD_OPT_ABORT
	optList            uint32 = 3  // NBD_OPT_LIST
	optPeekExport      uint32 = 4  // NBD_OPT_PEEK_EXPORT (withdrawn)
	optStartTLS        uint32 = 5  // NBD_OPT_STARTTLS
	optInfo            uint32 = 6  // NBD_OPT_INFO
	optGo              uint32 = 7  // NBD_OPT_GO
	optStructuredReply uint32 = 8  // NBD_OPT_STRUCTURED_REPLY
	optListMetaContext uint32 = 9  // NBD_OPT_LIST_META_CONTEXT
	optSetMetaContext  uint32 = 10 // NBD_OPT_SET_META_CONTEXT
	optExtendedHeaders uint32 = 11 // NBD_OPT_EXTENDED_HEADERS (experimental, answered UNSUP)
)

// Option reply types (§Option reply types). Errors have bit 31 set.
const (
	repAck              uint32 = 1 // NBD_REP_ACK
	repServer           uint32 = 2 // NBD_REP_SERVER
	repInfo             uint32 = 3 // NBD_REP_INFO
	repMetaContext      uint32 = 4 // NBD_REP_META_CONTEXT
	repFlagError        uint32 = 1 << 31
	repErrUnsup                = repFlagError | 1  // NBD_REP_ERR_UNSUP
	repErrPolicy               = repFlagError | 2  // NBD_REP_ERR_POLICY
	repErrInvalid              = repFlagError | 3  // NBD_REP_ERR_INVALID
	repErrPlatform             = repFlagError | 4  // NBD_REP_ERR_PLATFORM
	repErrTLSReqd              = repFlagError | 5  // NBD_REP_ERR_TLS_REQD
	repErrUnknown              = repFlagError | 6  // NBD_REP_ERR_UNKNOWN
	repErrShutdown             = repFlagError | 7  // NBD_REP_ERR_SHUTDOWN
	repErrBlockSizeReqd        = repFlagError | 8  // NBD_REP_ERR_BLOCK_SIZE_REQD
	repErrTooBig               = repFlagError | 9  // NBD_REP_ERR_TOO_BIG
	repErrExtHeaderReqd        = repFlagError | 10 // NBD_REP_ERR_EXT_HEADER_REQD
)

// Information types carried by NBD_REP_INFO (§Option reply types, NBD_REP_INFO).
const (
	infoExport      uint16 = 0 // NBD_INFO_EXPORT: 8 bytes size, 2 bytes transmission flags
	infoName        uint16 = 1 // NBD_INFO_NAME
	infoDescription uint16 = 2 // NBD_INFO_DESCRIPTION
	infoBlockSize   uint16 = 3 // NBD_INFO_BLOCK_SIZE: minimum, preferred, maximum (4 bytes each)
)

// Request types (§Request types).
const (
	cmdRead        uint16 = 0 // NBD_CMD_READ
	cmdWrite       uint16 = 1 // NBD_CMD_WRITE
	cmdDisc        uint16 = 2 // NBD_CMD_DISC
	cmdFlush       uint16 = 3 // NBD_CMD_FLUSH
	cmdTrim        uint16 = 4 // NBD_CMD_TRIM
	cmdCache       uint16 = 5 // NBD_CMD_CACHE (not supported: EINVAL)
	cmdWriteZeroes uint16 = 6 // NBD_CMD_WRITE_ZEROES
	cmdBlockStatus uint16 = 7 // NBD_CMD_BLOCK_STATUS
)

// Command flags (§Command flags).
const (
	cmdFlagFUA      uint16 = 1 << 0 // NBD_CMD_FLAG_FUA: valid on every command
	cmdFlagNoHole   uint16 = 1 << 1 // NBD_CMD_FLAG_NO_HOLE: WRITE_ZEROES only
	cmdFlagDF       uint16 = 1 << 2 // NBD_CMD_FLAG_DF: READ only, with structured replies
	cmdFlagReqOne   uint16 = 1 << 3 // NBD_CMD_FLAG_REQ_ONE: BLOCK_STATUS only
	cmdFlagFastZero uint16 = 1 << 4 // NBD_CMD_FLAG_FAST_ZERO (not advertised: EINVAL)
)

// Structured reply flags and chunk types (§Structured reply flags, §Structured reply types).
const (
	replyFlagDone uint16 = 1 << 0 // NBD_REPLY_FLAG_DONE

	replyTypeNone        uint16 = 0         // NBD_REPLY_TYPE_NONE
	replyTypeOffsetData  uint16 = 1         // NBD_REPLY_TYPE_OFFSET_DATA: 8 bytes offset, data
	replyTypeOffsetHole  uint16 = 2         // NBD_REPLY_TYPE_OFFSET_HOLE: 8 bytes offset, 4 bytes size
	replyTypeBlockStatus uint16 = 5         // NBD_REPLY_TYPE_BLOCK_STATUS: 4 bytes context id, (4 length, 4 flags)*
	replyTypeErrorBit    uint16 = 1 << 15   // every error chunk type has bit 15 set
	replyTypeError              = 1<<15 | 1 // NBD_REPLY_TYPE_ERROR: 4 errno, 2 message length, message
	replyTypeErrorOffset        = 1<<15 | 2 // NBD_REPLY_TYPE_ERROR_OFFSET: as ERROR, then 8 bytes offset
)

// Status flags of the base:allocation metadata context (§base:allocation metadata context).
const (
	stateHole uint32 = 1 << 0 // NBD_STATE_HOLE
	stateZero uint32 = 1 << 1 // NBD_STATE_ZERO
)

// Error values of the transmission phase (§Error values). They happen to
// equal the Linux errno numbers but are a protocol enumeration of their own.
const (
	errPerm     uint32 = 1   // NBD_EPERM
	errIO       uint32 = 5   // NBD_EIO
	errNoMem    uint32 = 12  // NBD_ENOMEM
	errInval    uint32 = 22  // NBD_EINVAL
	errNoSpc    uint32 = 28  // NBD_ENOSPC
	errOverflow uint32 = 75  // NBD_EOVERFLOW
	errNotSup   uint32 = 95  // NBD_ENOTSUP
	errShutdown uint32 = 108 // NBD_ESHUTDOWN
)

// Names and limits.
const (
	// metaContextBaseAllocation is the one metadata context this package knows (§The base: metadata namespace).
	metaContextBaseAllocation = "base:allocation"
	// metaContextID is the id the server hands out for base:allocation.
	metaContextID uint32 = 1

	// Size constraints advertised with NBD_INFO_BLOCK_SIZE (§Size constraints): the defaults the
	// spec recommends, so clients that never ask are served the same way.
	minBlockSize       = 1
	preferredBlockSize = 4096
	maxPayloadSize     = 32 << 20 // 2^25

	// maxStringLength bounds export names, descriptions and messages (§Conventions).
	maxStringLength = 4096
)

// Fixed sizes of the wire messages.
const (
	optHeaderSize        = 16 // magic 8, option 4, length 4
	optReplyHeaderSize   = 20 // magic 8, option 4, reply type 4, length 4
	requestHeaderSize    = 28 // magic 4, flags 2, type 2, cookie 8, offset 8, length 4
	simpleReplySize      = 16 // magic 4, error 4, cookie 8
	structuredHeaderSize = 20 // magic 4, flags 2, type 2, cookie 8, length 4
	exportNameReplySize  = 10 // size 8, transmission flags 2 (then 124 zero bytes unless NO_ZEROES)
	exportNameZeroes     = 124
)

var be = binary.BigEndian

// requestHeader is one transmission request (§Request message). A WRITE is
// followed by length bytes of payload.
type requestHeader struct {
	magic  uint32
	flags  uint16
	typ    uint16
	cookie uint64
	offset uint64
	length uint32
}

func (h *requestHeader) decode(b []byte) {
	_ = b[requestHeaderSize-1]
	h.magic = be.Uint32(b[0:])
	h.flags = be.Uint16(b[4:])
	h.typ = be.Uint16(b[6:])
	h.cookie = be.Uint64(b[8:])
	h.offset = be.Uint64(b[16:])
	h.length = be.Uint32(b[24:])
}

func (h *requestHeader) encode(b []byte) {
	_ = b[requestHeaderSize-1]
	be.PutUint32(b[0:], magicRequest)
	be.PutUint16(b[4:], h.flags)
	be.PutUint16(b[6:], h.typ)
	be.PutUint64(b[8:], h.cookie)
	be.PutUint64(b[16:], h.offset)
	be.PutUint32(b[24:], h.length)
}

// putSimpleReply encodes a simple reply header (§Simple reply message).
func putSimpleReply(b []byte, errno uint32, cookie uint64) {
	_ = b[simpleReplySize-1]
	be.PutUint32(b[0:], magicSimpleReply)
	be.PutUint32(b[4:], errno)
	be.PutUint64(b[8:], cookie)
}

// putChunkHeader encodes a structured reply chunk header (§Structured reply chunk message).
func putChunkHeader(b []byte, flags, typ uint16, cookie uint64, length uint32) {
	_ = b[structuredHeaderSize-1]
	be.PutUint32(b[0:], magicStructReply)
	be.PutUint16(b[4:], flags)
	be.PutUint16(b[6:], typ)
	be.PutUint64(b[8:], cookie)
	be.PutUint32(b[16:], length)
}

// putOptReplyHeader encodes an option reply header (§Fixed newstyle negotiation).
func putOptReplyHeader(b []byte, opt, typ, length uint32) {
	_ = b[optReplyHeaderSize-1]
	be.PutUint64(b[0:], magicOptReply)
	be.PutUint32(b[8:], opt)
	be.PutUint32(b[12:], typ)
	be.PutUint32(b[16:], length)
}

func optionName(opt uint32) string {
	switch opt {
	case optExportName:
		return "EXPORT_NAME"
	case optAbort:
		return "ABORT"
	case optList:
		return "LIST"
	case optPeekExport:
		return "PEEK_EXPORT"
	case optStartTLS:
		return "STARTTLS"
	case optInfo:
		return "INFO"
	case optGo:
		return "GO"
	case optStructuredReply:
		return "STRUCTURED_REPLY"
	case optListMetaContext:
		return "LIST_META_CONTEXT"
	case optSetMetaContext:
		return "SET_META_CONTEXT"
	case optExtendedHeaders:
		return "EXTENDED_HEADERS"
	}
	return fmt.Sprintf("option(%d)", opt)
}

func replyName(rep uint32) string {
	switch rep {
	case repAck:
		return "ACK"
	case repServer:
		return "SERVER"
	case repInfo:
		return "INFO"
	case repMetaContext:
		return "META_CONTEXT"
	case repErrUnsup:
		return "ERR_UNSUP"
	case repErrPolicy:
		return "ERR_POLICY"
	case repErrInvalid:
		return "ERR_INVALID"
	case repErrPlatform:
		return "ERR_PLATFORM"
	case repErrTLSReqd:
		return "ERR_TLS_REQD"
	case repErrUnknown:
		return "ERR_UNKNOWN"
	case repErrShutdown:
		return "ERR_SHUTDOWN"
	case repErrBlockSizeReqd:
		return "ERR_BLOCK_SIZE_REQD"
	case repErrTooBig:
		return "ERR_TOO_BIG"
	case repErrExtHeaderReqd:
		return "ERR_EXT_HEADER_REQD"
	}
	return fmt.Sprintf("reply(%#x)", rep)
}

func commandName(typ uint16) string {
	switch typ {
	case cmdRead:
		return "READ"
	case cmdWrite:
		return "WRITE"
	case cmdDisc:
		return "DISC"
	case cmdFlush:
		return "FLUSH"
	case cmdTrim:
		return "TRIM"
	case cmdCache:
		return "CACHE"
	case cmdWriteZeroes:
		return "WRITE_ZEROES"
	case cmdBlockStatus:
		return "BLOCK_STATUS"
	}
	return fmt.Sprintf("command(%d)", typ)
}
