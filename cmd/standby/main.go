// Command standby is every Standby role and its CLI in one binary.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strings"
	"syscall"

	"github.com/standby-dr/standby/internal/control"
)

// command is one CLI command. Each lives in its own file as newXCommand.
type command struct {
	name  string // words, e.g. "journal inspect"
	short string
	run   func(ctx context.Context, env *env, args []string) error
}

// env is what every command gets: where to print and how to log.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

func (e *env) logger(level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: l}))
}

func commands() []command {
	return append([]command{
		newServerCommand(),
		newSimulateAgentsCommand(),
		newJoinCommand(control.RoleAgent),
		newAgentInstallCommand(),
		newJoinCommand(control.RoleProcess),
		newJoinCommand(control.RoleTarget),
		newAgentCommand(),
		newProcessCommand(),
		newTargetCommand(),
		newTargetPointsCommand(),
		newVerifyCommand(),
		newCertsCommand(),
		newJournalInspectCommand(),
		newJournalReplayCommand(),
		newDemoCommand(),
		newVersionCommand(),
	}, slices.Concat(controlCommands(), jobCommands(), exportCommands(), planCommands(), planRunCommands())...)
}

// usageError is a mistake in the command line: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// Exit codes, mapped in one place.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func exitCode(err error) int {
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	}
	return exitError
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	e := &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}
	stopProfile := startProfile()
	err := dispatch(ctx, e, os.Args[1:])
	stopProfile()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "standby: %v\n", err)
	}
	os.Exit(exitCode(err))
}

// startProfile writes a CPU profile of the whole run to
// $STANDBY_CPUPROFILE.<pid>, and a profile of where goroutines blocked to
// $STANDBY_CPUPROFILE.block.<pid>, when that is set (a debugging aid: `go
// tool pprof` reads them), and returns what stops it.
func startProfile() func() {
	path := os.Getenv("STANDBY_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(fmt.Sprintf("%s.%d", path, os.Getpid()))
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "standby: STANDBY_CPUPROFILE: %v\n", err)
		return func() {}
	}
	runtime.SetBlockProfileRate(100_000) // ns: blocking of 0.1 ms and more
	return func() {
		pprof.StopCPUProfile()
		f.Close()
		if b, err := os.Create(fmt.Sprintf("%s.block.%d", path, os.Getpid())); err == nil {
			pprof.Lookup("block").WriteTo(b, 0)
			b.Close()
		}
	}
}

// dispatch finds the command whose words start args, longest first.
func dispatch(ctx context.Context, e *env, args []string) error {
	cmds := commands()
	sort.Slice(cmds, func(i, j int) bool { return len(cmds[i].name) > len(cmds[j].name) })
	for _, c := range cmds {
		words := strings.Fields(c.name)
		if len(args) >= len(words) && strings.Join(args[:len(words)], " ") == c.name {
			return c.run(ctx, e, args[len(words):])
		}
	}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		printUsage(e.stdout, cmds)
		return nil
	}
	printUsage(e.stderr, cmds)
	return usagef("unknown command %q", strings.Join(args, " "))
}

func printUsage(w io.Writer, cmds []command) {
	sort.Slice(cmds, func(i, j int) bool { return cmds[i].name < cmds[j].name })
	fmt.Fprintln(w, "Standby keeps a live, crash-consistent copy of machines at a second site.")
	fmt.Fprintln(w, "\nUsage: standby COMMAND [flags]   (standby COMMAND -h for a command's flags)")
	fmt.Fprintln(w, "\nCommands:")
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-18s %s\n", c.name, c.short)
	}
}

// newFlags makes a command's flag set; parse errors become usage errors.
func newFlags(e *env, name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet("standby "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: standby %s %s\n\nFlags:\n", name, usage)
		fs.PrintDefaults()
	}
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{err.Error()}
	}
	return nil
}

// outputFlag adds --output (-o) text|json, the documented contract of every
// command that prints data.
func outputFlag(fs *flag.FlagSet) *string {
	o := fs.String("output", "text", "output format: text or json")
	fs.StringVar(o, "o", "text", "shorthand for --output")
	return o
}

func checkOutput(o string) error {
	if o != "text" && o != "json" {
		return usagef("--output %q: use text or json", o)
	}
	return nil
}
