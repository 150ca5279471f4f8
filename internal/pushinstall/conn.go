package pushinstall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// conn is one SSH connection to the remote machine.
type conn struct {
	c    *ssh.Client
	sudo bool // prefix commands with sudo -n (not logged in as root)
}

// dial connects and authenticates, checking the host key.
func dial(ctx context.Context, o Options) (*conn, error) {
	auth, closeAuth, err := authMethods(o)
	if err != nil {
		return nil, err
	}
	defer closeAuth()
	hk, err := hostKeyCallback(o)
	if err != nil {
		return nil, err
	}
	cfg := &ssh.ClientConfig{User: o.User, Auth: auth, HostKeyCallback: hk, Timeout: 20 * time.Second}
	d := net.Dialer{Timeout: 20 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", o.Host)
	if err != nil {
		return nil, err
	}
	// The handshake has no context of its own: a deadline bounds it.
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	} else {
		nc.SetDeadline(time.Now().Add(30 * time.Second))
	}
	sc, chans, reqs, err := ssh.NewClientConn(nc, o.Host, cfg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	return &conn{c: ssh.NewClient(sc, chans, reqs)}, nil
}

func authMethods(o Options) ([]ssh.AuthMethod, func(), error) {
	var ms []ssh.AuthMethod
	closeAll := func() {}
	if o.KeyFile != "" {
		pem, err := os.ReadFile(o.KeyFile)
		if err != nil {
			return nil, closeAll, fmt.Errorf("private key: %w", err)
		}
		signer, err := ssh.ParsePrivateKey(pem)
		var pp *ssh.PassphraseMissingError
		if errors.As(err, &pp) {
			return nil, closeAll, fmt.Errorf("private key %s is encrypted: load it into ssh-agent (ssh-add) and leave --key out", o.KeyFile)
		}
		if err != nil {
			return nil, closeAll, fmt.Errorf("private key %s: %w", o.KeyFile, err)
		}
		ms = append(ms, ssh.PublicKeys(signer))
	}
	if o.AgentSocket != "" {
		ac, err := net.Dial("unix", o.AgentSocket)
		if err != nil {
			return nil, closeAll, fmt.Errorf("ssh-agent %s: %w", o.AgentSocket, err)
		}
		closeAll = func() { ac.Close() }
		ms = append(ms, ssh.PublicKeysCallback(agent.NewClient(ac).Signers))
	}
	if o.Password != "" {
		ms = append(ms, ssh.Password(o.Password))
	}
	return ms, closeAll, nil
}

// hostKeyCallback checks the host's key against the pinned fingerprint,
// else known_hosts. It never accepts an unknown key: the error carries the
// fingerprint for the operator to check and pin.
func hostKeyCallback(o Options) (ssh.HostKeyCallback, error) {
	if o.HostKeyFingerprint != "" {
		return func(host string, _ net.Addr, key ssh.PublicKey) error {
			if fp := ssh.FingerprintSHA256(key); fp != o.HostKeyFingerprint {
				return &HostKeyError{Host: o.Host, KeyType: key.Type(), Fingerprint: fp,
					Err: fmt.Errorf("%w: pinned %s", ErrUnknownHostKey, o.HostKeyFingerprint)}
			}
			return nil
		}, nil
	}
	var check ssh.HostKeyCallback
	if _, err := os.Stat(o.KnownHosts); err == nil {
		if check, err = knownhosts.New(o.KnownHosts); err != nil {
			return nil, fmt.Errorf("known hosts %s: %w", o.KnownHosts, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("known hosts: %w", err)
	}
	return func(host string, remote net.Addr, key ssh.PublicKey) error {
		he := &HostKeyError{Host: o.Host, KeyType: key.Type(), Fingerprint: ssh.FingerprintSHA256(key), KnownHosts: o.KnownHosts, Err: ErrUnknownHostKey}
		if check == nil {
			return he
		}
		err := check(host, remote, key)
		var ke *knownhosts.KeyError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &ke) && len(ke.Want) > 0:
			he.Err = ErrHostKeyMismatch
			return he
		case errors.As(err, &ke):
			return he
		}
		return err
	}, nil
}

// run runs script with sh on the remote machine (as root: under sudo -n
// when not logged in as root), with stdin, and returns its stdout. A
// failure carries the script's stderr.
func (c *conn) run(ctx context.Context, script string, stdin io.Reader) (string, error) {
	s, err := c.c.NewSession()
	if err != nil {
		return "", fmt.Errorf("ssh session: %w", err)
	}
	defer s.Close()
	var out, errb bytes.Buffer
	s.Stdout, s.Stderr = &out, &errb
	if stdin != nil {
		s.Stdin = stdin
	}
	cmd := "sh -c " + shq(script)
	if c.sudo {
		cmd = "sudo -n " + cmd
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(cmd) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		s.Signal(ssh.SIGKILL)
		s.Close()
		return "", ctx.Err()
	}
	if err != nil {
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = strings.TrimSpace(out.String())
		}
		if msg != "" {
			return out.String(), fmt.Errorf("%w: %s", err, lastLines(msg, 15))
		}
		return out.String(), err
	}
	return out.String(), nil
}

func (c *conn) Close() error { return c.c.Close() }

// shq quotes s for a POSIX shell.
func shq(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
