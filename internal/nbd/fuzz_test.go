package nbd

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// The fuzz targets feed arbitrary client bytes to one connection over
// net.Pipe and require that the server ends the connection on its own once
// the client is done: no panic, no hang, every worker gone.

var fuzzSrv struct {
	once sync.Once
	s    *Server
	err  error
}

// fuzzServer is shared by all iterations: connections share no state.
func fuzzServer(tb testing.TB) *Server {
	fuzzSrv.once.Do(func() {
		dir, err := os.MkdirTemp("", "nbdfuzz")
		if err != nil {
			fuzzSrv.err = err
			return
		}
		f, err := os.Create(filepath.Join(dir, "disk.img"))
		if err != nil {
			fuzzSrv.err = err
			return
		}
		os.RemoveAll(dir) // the open file lives on
		if err := f.Truncate(1 << 20); err != nil {
			fuzzSrv.err = err
			return
		}
		b, err := NewFileBackend(f)
		if err != nil {
			fuzzSrv.err = err
			return
		}
		fuzzSrv.s, fuzzSrv.err = NewServer(Options{
			Exports: []Export{
				{Name: "disk", Description: "fuzz", Backend: b},
				{Name: "ro", Backend: b, ReadOnly: true},
			},
			MaxInFlight: 4,
		})
	})
	if fuzzSrv.err != nil {
		tb.Fatal(fuzzSrv.err)
	}
	return fuzzSrv.s
}

// feed runs one connection with input as everything the client sends.
func feed(t *testing.T, input []byte) {
	s := fuzzServer(t)
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		s.serveConn(server)
		close(done)
	}()
	drained := make(chan struct{})
	go func() {
		io.Copy(io.Discard, client)
		close(drained)
	}()
	client.SetWriteDeadline(time.Now().Add(10 * time.Second))
	client.Write(input) // fails early if the server hangs up: fine
	client.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("server did not end the connection for input %q", input)
	}
	<-drained
}

// handshakePrefix negotiates like a real client: fixed newstyle, no zeroes,
// optionally structured replies and base:allocation, then GO.
func handshakePrefix(structured, meta bool) []byte {
	b := be.AppendUint32(nil, clientFlagFixedNewstyle|clientFlagNoZeroes)
	if structured {
		b = append(b, optBytes(optStructuredReply, nil)...)
	}
	if meta {
		b = append(b, optBytes(optSetMetaContext, optData(u32(4), "disk", u32(1), u32(15), "base:allocation"))...)
	}
	return append(b, optBytes(optGo, optData(u32(4), "disk", u16(1), u16(infoBlockSize)))...)
}

func FuzzOptionHaggling(f *testing.F) {
	flags := be.AppendUint32(nil, clientFlagFixedNewstyle|clientFlagNoZeroes)
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	f.Add(handshakePrefix(true, true))
	f.Add(handshakePrefix(false, false))
	f.Add(cat(flags, optBytes(optList, nil), optBytes(optAbort, nil)))
	f.Add(cat(flags, optBytes(optInfo, optData(u32(0), u16(3), u16(infoName), u16(infoDescription), u16(infoBlockSize)))))
	f.Add(cat(flags, optBytes(optStructuredReply, nil), optBytes(optListMetaContext, optData(u32(0), u32(0)))))
	f.Add(cat(flags, optBytes(optStructuredReply, nil), optBytes(optListMetaContext, optData(u32(2), "ro", u32(1), u32(5), "base:"))))
	f.Add(cat(flags, optBytes(optStartTLS, nil), optBytes(optExportName, []byte("disk"))))
	f.Add(cat(flags, optBytes(optExportName, []byte("nope"))))
	f.Add(cat(flags, optBytes(99, []byte("junk")), optBytes(optGo, []byte{0, 0, 0, 9})))
	f.Add(be.AppendUint32(nil, 0xffffffff))
	f.Add([]byte("IHAVEOPTIHAVEOPT"))
	f.Fuzz(func(t *testing.T, input []byte) {
		feed(t, input)
	})
}

func FuzzTransmission(f *testing.F) {
	req := func(typ, flags uint16, off uint64, length uint32, payload ...byte) []byte {
		return reqBytes(typ, flags, uint64(typ)<<8|uint64(length), off, length, payload)
	}
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	// The first byte picks the negotiation: bit 0 structured replies, bit 1 base:allocation.
	f.Add(byte(3), cat(req(cmdWrite, cmdFlagFUA, 0, 4, 'a', 'b', 'c', 'd'), req(cmdRead, cmdFlagDF, 0, 4), req(cmdDisc, 0, 0, 0)))
	f.Add(byte(0), cat(req(cmdWrite, 0, 1<<20-1, 2, 'x', 'y'), req(cmdRead, 0, 1<<20, 1), req(cmdFlush, 0, 0, 0)))
	f.Add(byte(3), cat(req(cmdBlockStatus, cmdFlagReqOne, 0, 1<<20), req(cmdBlockStatus, 0, 4096, 512)))
	f.Add(byte(1), cat(req(cmdWriteZeroes, cmdFlagNoHole, 0, 8192), req(cmdTrim, cmdFlagFUA, 4096, 4096), req(cmdCache, 0, 0, 1)))
	f.Add(byte(0), cat(req(cmdWrite, 0, 0, maxPayloadSize+1)))
	f.Add(byte(1), cat(req(cmdWrite, 0, 0, 65536, 1, 2, 3)))
	f.Add(byte(1), cat(req(cmdRead, 0, 0, maxPayloadSize+1), req(cmdDisc, 0, 0, 0), req(cmdRead, 0, 0, 1)))
	f.Add(byte(2), []byte("\x25\x60\x95\x13garbage"))
	f.Fuzz(func(t *testing.T, mode byte, requests []byte) {
		feed(t, append(handshakePrefix(mode&1 != 0, mode&2 != 0), requests...))
	})
}
