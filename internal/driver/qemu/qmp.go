package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// qmpTimeout bounds one QMP session when the context has no deadline.
const qmpTimeout = 5 * time.Second

// qmp is one short QMP session: connect, negotiate, a few commands, close.
// QEMU serves one QMP client at a time on a socket, so sessions are kept
// short and the driver serialises them per machine.
type qmp struct {
	c net.Conn
	r *bufio.Reader
}

// qmpError is an error answer from QEMU.
type qmpError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *qmpError) Error() string { return "qmp: " + e.Class + ": " + e.Desc }

// dialQMP connects to the socket at path and leaves capabilities
// negotiation mode.
func dialQMP(ctx context.Context, path string) (*qmp, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(qmpTimeout)
	}
	_ = c.SetDeadline(deadline)
	q := &qmp{c: c, r: bufio.NewReader(c)}
	var greeting struct {
		QMP *json.RawMessage `json:"QMP"`
	}
	line, err := q.r.ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &greeting)
	}
	if err == nil && greeting.QMP == nil {
		err = fmt.Errorf("no QMP greeting: %.100s", line)
	}
	if err == nil {
		_, err = q.execute("qmp_capabilities", nil)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("qmp handshake: %w", err)
	}
	return q, nil
}

func (q *qmp) Close() error { return q.c.Close() }

// execute runs one command and returns its "return" value; events that
// arrive meanwhile are skipped.
func (q *qmp) execute(cmd string, args any) (json.RawMessage, error) {
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, _ := json.Marshal(req)
	if _, err := q.c.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	for {
		line, err := q.r.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("qmp %s: %w", cmd, err)
		}
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *qmpError       `json:"error"`
			Event  string          `json:"event"`
		}
		if err := json.Unmarshal(line, &resp); err != nil {
			return nil, fmt.Errorf("qmp %s: %w", cmd, err)
		}
		switch {
		case resp.Event != "":
			continue
		case resp.Error != nil:
			return nil, fmt.Errorf("qmp %s: %w", cmd, resp.Error)
		default:
			return resp.Return, nil
		}
	}
}

// runStatus asks for the VM's run state (query-status).
func (q *qmp) runStatus() (string, error) {
	r, err := q.execute("query-status", nil)
	if err != nil {
		return "", err
	}
	var s struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(r, &s); err != nil {
		return "", fmt.Errorf("qmp query-status: %w", err)
	}
	return s.Status, nil
}

// quit tells QEMU to exit; the connection closing before the answer is
// success too.
func (q *qmp) quit() error {
	_, err := q.execute("quit", nil)
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
