package nbd

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// rawClient speaks the protocol byte by byte, to send what a real client
// never would.
type rawClient struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t testing.TB, ts *testServer) *rawClient {
	t.Helper()
	c, err := net.Dial("unix", ts.socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return &rawClient{t: t, c: c, br: bufio.NewReader(c)}
}

// greet reads the server greeting and sends client flags.
func (r *rawClient) greet(flags uint32) {
	r.t.Helper()
	var b [18]byte
	if _, err := io.ReadFull(r.br, b[:]); err != nil {
		r.t.Fatal(err)
	}
	if be.Uint64(b[:]) != magicInit || be.Uint64(b[8:]) != magicOpts || be.Uint16(b[16:]) != flagFixedNewstyle|flagNoZeroes {
		r.t.Fatalf("greeting % x", b)
	}
	r.send(be.AppendUint32(nil, flags))
}

func (r *rawClient) send(b []byte) {
	r.t.Helper()
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

func optBytes(opt uint32, data []byte) []byte {
	b := be.AppendUint64(nil, magicOpts)
	b = be.AppendUint32(b, opt)
	b = be.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func (r *rawClient) opt(opt uint32, data []byte) { r.send(optBytes(opt, data)) }

// reply reads one option reply.
func (r *rawClient) reply(wantOpt uint32) (uint32, []byte) {
	r.t.Helper()
	var h [optReplyHeaderSize]byte
	if _, err := io.ReadFull(r.br, h[:]); err != nil {
		r.t.Fatalf("read option reply: %v", err)
	}
	if be.Uint64(h[:]) != magicOptReply || be.Uint32(h[8:]) != wantOpt {
		r.t.Fatalf("option reply header % x", h)
	}
	data := make([]byte, be.Uint32(h[16:]))
	if _, err := io.ReadFull(r.br, data); err != nil {
		r.t.Fatal(err)
	}
	return be.Uint32(h[12:]), data
}

// expect reads replies until the final one and checks its type.
func (r *rawClient) expect(opt, final uint32) {
	r.t.Helper()
	for {
		typ, data := r.reply(opt)
		if typ == repInfo || typ == repServer || typ == repMetaContext {
			continue
		}
		if typ != final {
			r.t.Fatalf("%s: reply %s (%q), want %s", optionName(opt), replyName(typ), data, replyName(final))
		}
		return
	}
}

// enter negotiates and enters transmission on the default export.
func (r *rawClient) enter(structured, meta bool) {
	r.t.Helper()
	r.greet(clientFlagFixedNewstyle | clientFlagNoZeroes)
	if structured {
		r.opt(optStructuredReply, nil)
		r.expect(optStructuredReply, repAck)
	}
	if meta {
		r.opt(optSetMetaContext, optData(u32(0), u32(1), u32(15), "base:allocation"))
		r.expect(optSetMetaContext, repAck)
	}
	r.opt(optGo, optData(u32(0), u16(0)))
	r.expect(optGo, repAck)
}

func reqBytes(typ, flags uint16, cookie, off uint64, length uint32, payload []byte) []byte {
	b := make([]byte, requestHeaderSize, requestHeaderSize+len(payload))
	(&requestHeader{flags: flags, typ: typ, cookie: cookie, offset: off, length: length}).encode(b)
	return append(b, payload...)
}

type rawReply struct {
	cookie uint64
	errno  uint32
	typ    uint16 // chunk type, for structured replies
	data   []byte // chunk payload, or READ data of a simple reply
}

// simpleReply reads a simple reply; dataLen bytes follow a successful READ.
func (r *rawClient) simpleReply(dataLen int) rawReply {
	r.t.Helper()
	var h [simpleReplySize]byte
	if _, err := io.ReadFull(r.br, h[:]); err != nil {
		r.t.Fatalf("read reply: %v", err)
	}
	if be.Uint32(h[:]) != magicSimpleReply {
		r.t.Fatalf("reply header % x", h)
	}
	rep := rawReply{errno: be.Uint32(h[4:]), cookie: be.Uint64(h[8:])}
	if rep.errno == 0 && dataLen > 0 {
		rep.data = make([]byte, dataLen)
		if _, err := io.ReadFull(r.br, rep.data); err != nil {
			r.t.Fatal(err)
		}
	}
	return rep
}

// chunk reads a structured reply chunk or a simple reply without data.
func (r *rawClient) chunk() rawReply {
	r.t.Helper()
	var h [structuredHeaderSize]byte
	if _, err := io.ReadFull(r.br, h[:4]); err != nil {
		r.t.Fatalf("read reply: %v", err)
	}
	if be.Uint32(h[:]) == magicSimpleReply {
		io.ReadFull(r.br, h[4:simpleReplySize])
		return rawReply{errno: be.Uint32(h[4:]), cookie: be.Uint64(h[8:])}
	}
	if _, err := io.ReadFull(r.br, h[4:]); err != nil || be.Uint32(h[:]) != magicStructReply || be.Uint16(h[4:]) != replyFlagDone {
		r.t.Fatalf("chunk header % x: %v", h, err)
	}
	rep := rawReply{typ: be.Uint16(h[6:]), cookie: be.Uint64(h[8:]), data: make([]byte, be.Uint32(h[16:]))}
	if _, err := io.ReadFull(r.br, rep.data); err != nil {
		r.t.Fatal(err)
	}
	if rep.typ == replyTypeError {
		rep.errno = be.Uint32(rep.data)
	}
	return rep
}

// expectClosed checks that the server closes the connection.
func (r *rawClient) expectClosed() {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, r.br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		r.t.Fatal("server did not close the connection")
	}
}

// abuseServer is a server for protocol abuse; the test checks at the end
// that every connection ended and no goroutine was left behind.
func abuseServer(t *testing.T, mutate func(*Options)) *testServer {
	base := runtime.NumGoroutine()
	t.Cleanup(func() { checkGoroutines(t, base) }) // runs after the server's own cleanup
	ts := MustServer(t, serverConfig{unix: true, size: 1 << 20, mutate: mutate})
	t.Cleanup(func() { waitNoConns(t, ts.Server) })
	return ts
}

func TestHandshakeAbuse(t *testing.T) {
	ts := abuseServer(t, nil)
	t.Run("unknown client flags", func(t *testing.T) {
		r := dialRaw(t, ts)
		r.greet(1 << 7)
		r.expectClosed()
	})
	t.Run("garbage option magic", func(t *testing.T) {
		r := dialRaw(t, ts)
		r.greet(clientFlagFixedNewstyle)
		r.send(bytes.Repeat([]byte("garbage!"), 4))
		r.expectClosed()
	})
	t.Run("truncated option", func(t *testing.T) {
		r := dialRaw(t, ts)
		r.greet(clientFlagFixedNewstyle)
		r.send(optBytes(optGo, make([]byte, 100))[:optHeaderSize+10])
		r.c.(*net.UnixConn).CloseWrite()
		r.expectClosed()
	})
	t.Run("huge option length", func(t *testing.T) {
		r := dialRaw(t, ts)
		r.greet(clientFlagFixedNewstyle)
		h := optBytes(optInfo, nil)
		be.PutUint32(h[12:], 0xffffffff)
		r.send(h)
		r.expectClosed() // without waiting for 4 GiB
	})
	t.Run("too many options", func(t *testing.T) {
		r := dialRaw(t, ts)
		r.greet(clientFlagFixedNewstyle)
		go func() {
			for range maxOptions + 10 {
				if _, err := r.c.Write(optBytes(optStructuredReply, nil)); err != nil {
					return
				}
			}
		}()
		r.expectClosed()
	})
	t.Run("unknown and malformed options", func(t *testing.T) {
		r := dialRaw(t, ts)
		r.greet(clientFlagFixedNewstyle)
		r.opt(99, []byte("whatever"))
		r.expect(99, repErrUnsup)
		r.opt(optExtendedHeaders, nil)
		r.expect(optExtendedHeaders, repErrUnsup)
		r.opt(optList, []byte("x"))
		r.expect(optList, repErrInvalid)
		r.opt(optInfo, []byte{1, 2, 3})
		r.expect(optInfo, repErrInvalid)
		r.opt(optStructuredReply, []byte("x"))
		r.expect(optStructuredReply, repErrInvalid)
		r.opt(optSetMetaContext, optData(u32(0), u32(0)))
		r.expect(optSetMetaContext, repErrInvalid) // structured replies first
		r.opt(optStartTLS, nil)
		r.expect(optStartTLS, repErrPolicy)
		r.opt(optGo, optData(u32(4), "nope", u16(0)))
		r.expect(optGo, repErrUnknown)
		// The session is still usable.
		r.opt(optList, nil)
		typ, data := r.reply(optList)
		if typ != repServer || string(data[4:]) != "test disk" {
			t.Fatalf("LIST: %s %q", replyName(typ), data)
		}
		r.expect(optList, repAck)
		r.opt(optInfo, optData(u32(0), u16(2), u16(infoName), u16(infoDescription)))
		seen := map[uint16]string{}
		for {
			typ, data := r.reply(optInfo)
			if typ == repAck {
				break
			}
			seen[be.Uint16(data)] = string(data[2:])
		}
		if seen[infoDescription] != "test disk" || len(seen[infoExport]) != 10 || len(seen[infoBlockSize]) != 12 {
			t.Fatalf("INFO replies: %v", seen)
		}
		r.opt(optAbort, nil)
		r.expect(optAbort, repAck)
		r.expectClosed()
	})
	t.Run("export name unknown", func(t *testing.T) {
		r := dialRaw(t, ts)
		r.greet(clientFlagFixedNewstyle)
		r.opt(optExportName, []byte("nope"))
		r.expectClosed()
	})
	t.Run("export name with zeroes", func(t *testing.T) {
		r := dialRaw(t, ts)
		r.greet(clientFlagFixedNewstyle)
		r.opt(optExportName, nil)
		b := make([]byte, exportNameReplySize+exportNameZeroes)
		if _, err := io.ReadFull(r.br, b); err != nil {
			t.Fatal(err)
		}
		if be.Uint64(b) != 1<<20 || !bytes.Equal(b[10:], make([]byte, 124)) {
			t.Fatalf("EXPORT_NAME reply % x", b[:10])
		}
		r.send(reqBytes(cmdDisc, 0, 0, 0, 0, nil))
		r.expectClosed()
	})
	t.Run("vanish during handshake", func(t *testing.T) {
		r := dialRaw(t, ts)
		r.greet(clientFlagFixedNewstyle)
		r.send(optBytes(optGo, optData(u32(0), u16(0)))[:20])
		r.c.Close()
	})
}

func TestTLSRequiredRefusesOptions(t *testing.T) {
	pki := mustPKI(t)
	ts := abuseServer(t, func(o *Options) { o.TLSConfig, o.TLSRequired = pki.serverTLS, true })
	r := dialRaw(t, ts)
	r.greet(clientFlagFixedNewstyle)
	for _, opt := range []uint32{optList, optStructuredReply, optInfo, optGo, 99} {
		r.opt(opt, nil)
		r.expect(opt, repErrTLSReqd)
	}
	r.opt(optExportName, nil)
	r.expectClosed()

	r = dialRaw(t, ts)
	r.greet(0) // no fixed newstyle: TLS impossible
	r.expectClosed()
}

func TestTransmissionAbuse(t *testing.T) {
	ts := abuseServer(t, nil)
	t.Run("errors keep the connection", func(t *testing.T) {
		r := dialRaw(t, ts)
		r.enter(false, false)
		// A write beyond the end: its payload is consumed, then ENOSPC.
		r.send(reqBytes(cmdWrite, 0, 1, 1<<20-2, 4, []byte("abcd")))
		if rep := r.simpleReply(0); rep.cookie != 1 || rep.errno != errNoSpc {
			t.Fatalf("write past the end: %+v", rep)
		}
		r.send(reqBytes(cmdRead, 0, 2, 1<<20, 1, nil))
		if rep := r.simpleReply(0); rep.cookie != 2 || rep.errno != errInval {
			t.Fatalf("read past the end: %+v", rep)
		}
		r.send(reqBytes(77, 0, 3, 0, 0, nil))
		if rep := r.simpleReply(0); rep.cookie != 3 || rep.errno != errInval {
			t.Fatalf("unknown command: %+v", rep)
		}
		r.send(reqBytes(cmdBlockStatus, 0, 4, 0, 512, nil))
		if rep := r.simpleReply(0); rep.cookie != 4 || rep.errno != errInval {
			t.Fatalf("block status without a context: %+v", rep)
		}
		r.send(reqBytes(cmdWrite, cmdFlagReqOne, 5, 0, 3, []byte("xyz")))
		if rep := r.simpleReply(0); rep.cookie != 5 || rep.errno != errInval {
			t.Fatalf("write with REQ_ONE: %+v", rep)
		}
		r.send(reqBytes(cmdWrite, cmdFlagFUA, 6, 100, 3, []byte("xyz")))
		if rep := r.simpleReply(0); rep.cookie != 6 || rep.errno != 0 {
			t.Fatalf("write: %+v", rep)
		}
		r.send(reqBytes(cmdRead, 0, 7, 100, 3, nil))
		if rep := r.simpleReply(3); rep.cookie != 7 || string(rep.data) != "xyz" {
			t.Fatalf("read: %+v", rep)
		}
		r.send(reqBytes(cmdDisc, 0, 8, 0, 0, nil))
		r.expectClosed()
	})
	t.Run("structured errors", func(t *testing.T) {
		r := dialRaw(t, ts)
		r.enter(true, true)
		r.send(reqBytes(cmdRead, 0, 1, 1<<20, 1, nil))
		if rep := r.chunk(); rep.typ != replyTypeError || rep.errno != errInval {
			t.Fatalf("read past the end: %+v", rep)
		}
		r.send(reqBytes(cmdRead, cmdFlagDF, 2, 0, 0, nil))
		if rep := r.chunk(); rep.typ != replyTypeNone {
			t.Fatalf("zero-length read: %+v", rep)
		}
		r.send(reqBytes(cmdBlockStatus, cmdFlagReqOne, 3, 1<<19, 1<<19, nil)) // a range no test writes
		if rep := r.chunk(); rep.typ != replyTypeBlockStatus || len(rep.data) != 12 ||
			be.Uint32(rep.data) != metaContextID || be.Uint32(rep.data[4:]) != 1<<19 || be.Uint32(rep.data[8:]) != stateHole|stateZero {
			t.Fatalf("block status of a sparse file: %+v", rep)
		}
		r.send(reqBytes(cmdDisc, 0, 4, 0, 0, nil))
		r.expectClosed()
	})
	t.Run("read-only", func(t *testing.T) {
		b, _, _ := MustFileBackend(t, 1<<20)
		ro := abuseServer(t, func(o *Options) { o.Exports = []Export{{Backend: b, ReadOnly: true}} })
		r := dialRaw(t, ro)
		r.enter(false, false)
		r.send(reqBytes(cmdWrite, 0, 1, 0, 2, []byte("hi")))
		r.send(reqBytes(cmdTrim, 0, 2, 0, 2, nil))
		r.send(reqBytes(cmdWriteZeroes, 0, 3, 0, 2, nil))
		for range 3 {
			if rep := r.simpleReply(0); rep.errno != errPerm {
				t.Fatalf("write to a read-only export: %+v", rep)
			}
		}
	})
	t.Run("bad request magic", func(t *testing.T) {
		r := dialRaw(t, ts)
		r.enter(false, false)
		b := reqBytes(cmdRead, 0, 1, 0, 1, nil)
		b[0] ^= 0xff
		r.send(b)
		r.expectClosed()
	})
	t.Run("payload over the maximum", func(t *testing.T) {
		r := dialRaw(t, ts)
		r.enter(false, false)
		r.send(reqBytes(cmdWrite, 0, 1, 0, maxPayloadSize+1, nil))
		r.expectClosed()
	})
	t.Run("request after DISC", func(t *testing.T) {
		r := dialRaw(t, ts)
		r.enter(false, false)
		r.send(reqBytes(cmdWrite, 0, 1, 0, 4, []byte("abcd")))
		r.send(reqBytes(cmdDisc, 0, 2, 0, 0, nil))
		r.c.Write(reqBytes(cmdWrite, 0, 3, 0, 4, []byte("zzzz")))
		if rep := r.simpleReply(0); rep.cookie != 1 || rep.errno != 0 {
			t.Fatalf("write before DISC: %+v", rep)
		}
		r.expectClosed() // and no reply to cookie 3
		got := make([]byte, 4)
		ts.file.ReadAt(got, 0)
		if string(got) != "abcd" {
			t.Fatalf("disk has %q: the request after DISC was served", got)
		}
	})
	t.Run("vanish mid-payload", func(t *testing.T) {
		r := dialRaw(t, ts)
		r.enter(false, false)
		r.send(reqBytes(cmdWrite, 0, 1, 0, 65536, make([]byte, 1000)))
		r.c.Close()
	})
	t.Run("vanish with requests in flight", func(t *testing.T) {
		r := dialRaw(t, ts)
		r.enter(true, false)
		var b []byte
		for i := range 100 {
			b = append(b, reqBytes(cmdRead, 0, uint64(i), 0, 65536, nil)...)
		}
		r.send(b)
		r.c.Close()
	})
	t.Run("pipelined", func(t *testing.T) {
		r := dialRaw(t, ts)
		r.enter(false, false)
		const n = 200 // more than MaxInFlight: the reader must wait for free requests
		var b []byte
		for i := range n {
			b = append(b, reqBytes(cmdWrite, 0, uint64(i), uint64(i*512), 512, bytes.Repeat([]byte{byte(i)}, 512))...)
		}
		go r.c.Write(b)
		seen := make(map[uint64]bool)
		for range n {
			rep := r.simpleReply(0)
			if rep.errno != 0 || seen[rep.cookie] {
				t.Fatalf("reply %+v (seen before: %v)", rep, seen[rep.cookie])
			}
			seen[rep.cookie] = true
		}
		r.send(reqBytes(cmdDisc, 0, 0, 0, 0, nil))
		r.expectClosed()
	})
}
