package segpack

import (
	"fmt"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// Options configure one stream. Both ends of a stream must use the same
// BlockSize and Window (Unpack checks); Level matters only to the Packer.
// The zero value is the default: 4 KiB blocks, a 32 MiB window, fastest
// zstd.
type Options struct {
	// BlockSize is the granularity of zero elimination and dedup inside
	// write payloads, in bytes: 0 means DefaultBlockSize, otherwise
	// MinBlockSize..MaxBlockSize.
	BlockSize int
	// Window is how many bytes of distinct payload blocks each end
	// remembers for dedup: 0 means DefaultWindow, a negative value disables
	// dedup, otherwise at least BlockSize and at most MaxWindow. It is
	// rounded down to a whole number of blocks. Each end holds up to this
	// many bytes per stream.
	Window int64
	// Level is the zstd effort of the Packer: 0 means LevelFastest;
	// LevelNone sends the op stream uncompressed.
	Level Level
}

// withDefaults fills the zero fields: the one place defaults live.
func (o Options) withDefaults() Options {
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.Window == 0 {
		o.Window = DefaultWindow
	}
	if o.Level == 0 {
		o.Level = LevelFastest
	}
	return o
}

// Validate reports whether o (with its defaults filled) is usable, listing
// the allowed values if not.
func (o Options) Validate() error {
	o = o.withDefaults()
	if o.BlockSize < MinBlockSize || o.BlockSize > MaxBlockSize {
		return fmt.Errorf("%w: block size %d: want 0 (default %d) or %d..%d", ErrOptions, o.BlockSize, DefaultBlockSize, MinBlockSize, MaxBlockSize)
	}
	if o.Window > 0 && (o.Window < int64(o.BlockSize) || o.Window > MaxWindow) {
		return fmt.Errorf("%w: window %d: want 0 (default %d), negative (no dedup), or %d..%d", ErrOptions, o.Window, DefaultWindow, o.BlockSize, MaxWindow)
	}
	if _, ok := levels[o.Level]; !ok {
		return fmt.Errorf("%w: level %d: want one of %s", ErrOptions, int(o.Level), levelNames())
	}
	return nil
}

// blocks is the window's capacity in blocks; 0 when dedup is disabled.
func (o Options) blocks() uint32 {
	if o.Window < 0 {
		return 0
	}
	return uint32(o.Window / int64(o.BlockSize))
}

// Level is how hard the Packer compresses the op stream.
type Level int

// Levels. The zstd ones map to the klauspost/compress encoder levels.
const (
	LevelNone     Level = -1 // no compression
	LevelFastest  Level = 1  // zstd.SpeedFastest, about zstd -1; the default
	LevelStandard Level = 2  // zstd.SpeedDefault, about zstd -3
	LevelBetter   Level = 3  // zstd.SpeedBetterCompression, about zstd -7
	LevelBest     Level = 4  // zstd.SpeedBestCompression, about zstd -11
)

var levels = map[Level]struct {
	name string
	zstd zstd.EncoderLevel
}{
	LevelNone:     {"none", 0},
	LevelFastest:  {"fastest", zstd.SpeedFastest},
	LevelStandard: {"standard", zstd.SpeedDefault},
	LevelBetter:   {"better", zstd.SpeedBetterCompression},
	LevelBest:     {"best", zstd.SpeedBestCompression},
}

func levelNames() string {
	return "none, fastest, standard, better, best"
}

// ZstdLevel is the klauspost/compress encoder level of l (0 meaning
// LevelFastest, as in Options); LevelNone has none and gives the fastest.
func (l Level) ZstdLevel() zstd.EncoderLevel {
	if v, ok := levels[l]; ok && l != LevelNone {
		return v.zstd
	}
	return zstd.SpeedFastest
}

func (l Level) String() string {
	if v, ok := levels[l]; ok {
		return v.name
	}
	return fmt.Sprintf("level(%d)", int(l))
}

// ParseLevel parses a level's name (as String prints it), for
// configuration files and flags. The empty string is LevelFastest.
func ParseLevel(s string) (Level, error) {
	if s == "" {
		return LevelFastest, nil
	}
	for l, v := range levels {
		if strings.EqualFold(s, v.name) {
			return l, nil
		}
	}
	return 0, fmt.Errorf("%w: compression level %q: want one of %s", ErrOptions, s, levelNames())
}

// ParseCompression parses a compression setting as configurations and
// copy tunnel offers name it: "auto" (LevelFastest, skipped where it does
// not pay) or a level's name ("none" is off).
func ParseCompression(s string) (l Level, adaptive bool, err error) {
	if s == "auto" {
		return LevelFastest, true, nil
	}
	l, err = ParseLevel(s)
	return l, false, err
}
