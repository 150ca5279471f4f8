package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvDSN names the variable with the DSN of a server to use.
const EnvDSN = "STANDBY_TEST_POSTGRES"

// binGlob is where Debian's postgresql packages put the server binaries.
const binGlob = "/usr/lib/postgresql/*/bin"

var (
	inMain  atomic.Bool
	once    sync.Once
	srv     *server
	srvErr  error
	srvSkip string
	dbCount atomic.Int64
)

// server is a PostgreSQL the tests create databases in.
type server struct {
	admin string // DSN of its maintenance database
	// dsn returns the DSN of database name on it.
	dsn func(name string) string
	// stop ends a cluster this process started; nil for an external one.
	stop func() error
}

// Main runs the tests, then stops the cluster if one was started.
func Main(m *testing.M) int {
	inMain.Store(true)
	code := m.Run()
	if srv != nil && srv.stop != nil {
		if err := srv.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: stop the test cluster: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// DSN returns the URL (or key=value DSN, for an external server given so)
// of a new, empty database, dropped when tb ends.
func DSN(tb testing.TB) string {
	tb.Helper()
	if !inMain.Load() {
		tb.Fatal("pgtest: call pgtest.Main from TestMain (func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }), so that the test cluster is stopped")
	}
	once.Do(func() { srv, srvSkip, srvErr = start() })
	if srvSkip != "" {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("pgtest: %s (CI=true: the PostgreSQL tests must run)", srvSkip)
		}
		tb.Skipf("pgtest: %s", srvSkip)
	}
	if srvErr != nil {
		tb.Fatalf("pgtest: %v", srvErr)
	}
	name := fmt.Sprintf("standby_test_%d_%d", os.Getpid(), dbCount.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := admin(ctx, srv.admin, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("pgtest: create database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// FORCE: a store the test forgot to close must not keep the
		// database (and the next run's disk) alive.
		if err := admin(ctx, srv.admin, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return srv.dsn(name)
}

// admin runs one statement on the maintenance database.
func admin(ctx context.Context, dsn, stmt string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, stmt)
	return err
}

// start finds the server to use: the external one, or a new cluster. A
// non-empty skip says why there is none (binaries missing).
func start() (s *server, skip string, err error) {
	if dsn := os.Getenv(EnvDSN); dsn != "" {
		return external(dsn)
	}
	bin, err := findBin()
	if err != nil {
		return nil, err.Error(), nil
	}
	s, err = startCluster(bin)
	return s, "", err
}

// external uses the server at dsn; databases are made by replacing the
// DSN's database name.
func external(dsn string) (*server, string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return nil, "", fmt.Errorf("$%s: %w", EnvDSN, err)
		}
		return &server{admin: dsn, dsn: func(name string) string {
			v := *u
			v.Path = "/" + name
			return v.String()
		}}, "", nil
	}
	// key=value form: a later dbname overrides an earlier one.
	return &server{admin: dsn, dsn: func(name string) string { return dsn + " dbname=" + name }}, "", nil
}

// findBin returns the newest /usr/lib/postgresql/<version>/bin holding
// initdb and postgres.
func findBin() (string, error) {
	dirs, _ := filepath.Glob(binGlob)
	var ok []string
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			ok = append(ok, d)
		}
	}
	if len(ok) == 0 {
		return "", fmt.Errorf("no PostgreSQL server binaries in %s: install the Debian package postgresql (apt-get install postgresql; scripts/test.sh does), or set $%s to the DSN of a server", binGlob, EnvDSN)
	}
	version := func(d string) int {
		v, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		return v
	}
	sort.Slice(ok, func(i, j int) bool { return version(ok[i]) > version(ok[j]) })
	return ok[0], nil
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// startCluster initdb's a cluster in a new temporary directory and starts
// it on a unix socket there.
func startCluster(bin string) (_ *server, err error) {
	dir, err := os.MkdirTemp("", "standby-pgtest-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	attr, err := runAs(dir)
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + dir, "LC_ALL=C", "TZ=UTC"}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	initdb.Dir, initdb.Env, initdb.SysProcAttr = dir, env, attr
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	logPath := filepath.Join(dir, "postgres.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	pg := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-k", dir,
		"-c", "listen_addresses=", // no TCP: nothing to collide with, nothing exposed
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=200", "-c", "shared_buffers=32MB")
	pg.Dir, pg.Env, pg.Stdout, pg.Stderr = dir, env, logFile, logFile
	attr.Pdeathsig = syscall.SIGQUIT // a killed test binary takes its cluster along
	pg.SysProcAttr = attr
	if err := pg.Start(); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- pg.Wait() }()
	stop := func() error {
		defer os.RemoveAll(dir)
		pg.Process.Signal(syscall.SIGINT) // fast shutdown
		select {
		case <-exited:
			return nil
		case <-time.After(15 * time.Second):
			pg.Process.Kill()
			<-exited
			return errors.New("postgres did not stop in 15 s; killed")
		}
	}
	dsn := func(name string) string {
		return "postgres://postgres@/" + name + "?host=" + url.QueryEscape(dir) + "&sslmode=disable"
	}
	s := &server{admin: dsn("postgres"), dsn: dsn, stop: stop}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := admin(ctx, s.admin, "SELECT 1")
		cancel()
		if err == nil {
			return s, nil
		}
		select {
		case werr := <-exited:
			exited <- werr
			log, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("postgres exited: %v: %s", werr, log)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("postgres not ready after 60 s: %v", err)
		}
	}
}

// runAs returns the process attributes for the cluster's processes: as
// root, the postgres user, owning dir; otherwise the current user.
func runAs(dir string) (*syscall.SysProcAttr, error) {
	if os.Geteuid() != 0 {
		return &syscall.SysProcAttr{}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, and initdb refuses root: want the postgres system user, which the Debian package postgresql creates: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, err
	}
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}, nil
}
