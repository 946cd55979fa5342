package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember/daemon/config"
)

var update = flag.Bool("update", false, "rewrite packaging/ember.toml from emberd's flags")

// defaultConfig is the packaged default config file.
var defaultConfig = filepath.Join("..", "..", "..", "packaging", "ember.toml")

// parse runs emberd's command-line handling up to the point where the
// daemon would start.
func parse(t *testing.T, args ...string) (*settings, error) {
	t.Helper()
	var s settings
	fs := newFlagSet(&s)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	return &s, loadConfig(fs, s.configPath)
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ember.toml")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigFile(t *testing.T) {
	p := writeFile(t, `# emberd settings
listen = "0.0.0.0:9080"
take-hold = "5s"
max-attempts = 5
log-level = "debug"
data-dir = "/srv/ember"
stop-grace = "1m"
`)
	s, err := parse(t, "--config", p, "--max-attempts", "7", "-data-dir=/tmp/x")
	if err != nil {
		t.Fatal(err)
	}
	o := s.opts
	got := fmt.Sprint(o.Listen, o.TakeHold, o.MaxAttempts, s.logLevel, o.DataDir, o.StopGrace, o.GRPCListen, o.StopHold)
	// The command line wins (max-attempts, data-dir); unset keys keep
	// their defaults (grpc-listen, stop-hold).
	want := fmt.Sprint("0.0.0.0:9080", 5*time.Second, 7, "debug", "/tmp/x", time.Minute, "127.0.0.1:7081", 20*time.Second)
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}

	// No --config: no file, defaults only.
	s, err = parse(t)
	if err != nil || s.opts.Listen != "127.0.0.1:7080" || s.configPath != "" {
		t.Errorf("no config: %v %+v", err, s)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, content, want string }{
		{"typo", "listen = \"a:1\"\nlistn = \"b:2\"\n", `:2: unknown key "listn" (did you mean "listen"?)`},
		{"bad duration", "take-hold = \"2x\"", `:1: key "take-hold": invalid value "2x": parse error`},
		{"syntax", "[server]\nlisten = \"a\"", ":1: tables are not supported: keys are flag names, at the top level"},
		{"config key", "config = \"/etc/other.toml\"", `:1: key "config" cannot be set in a config file, only on the command line`},
		{"version key", "version = true", `:1: key "version" cannot be set in a config file, only on the command line`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, tc.content)
			_, err := parse(t, "--config", p)
			if err == nil || err.Error() != p+tc.want {
				t.Errorf("got  %v\nwant %s%s", err, p, tc.want)
			}
		})
	}
	_, err := parse(t, "--config", filepath.Join(dir, "absent.toml"))
	if want := "open " + filepath.Join(dir, "absent.toml") + ": no such file or directory"; err == nil || err.Error() != want {
		t.Errorf("missing file: got %v, want %s", err, want)
	}
	// A flag given on the command line is not read from the file at all.
	p := writeFile(t, "take-hold = \"2x\"\n")
	if s, err := parse(t, "--config", p, "--take-hold", "3s"); err != nil || s.opts.TakeHold != 3*time.Second {
		t.Errorf("command line did not win: %v", err)
	}
}

// capture runs f with os.Stdout and os.Stderr redirected to pipes and
// returns what it wrote to them.
func capture(t *testing.T, f func()) (stdout, stderr string) {
	t.Helper()
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var o, e []byte
	var wg sync.WaitGroup
	wg.Go(func() { o, _ = io.ReadAll(outR) })
	wg.Go(func() { e, _ = io.ReadAll(errR) })
	func() {
		savedOut, savedErr := os.Stdout, os.Stderr
		os.Stdout, os.Stderr = outW, errW
		defer func() {
			os.Stdout, os.Stderr = savedOut, savedErr
			outW.Close()
			errW.Close()
		}()
		f()
	}()
	wg.Wait()
	outR.Close()
	errR.Close()
	return string(o), string(e)
}

// TestRunConfig goes through run itself: a bad file stops emberd with exit
// status 2 and one "emberd: file:line: reason" line per problem; a good
// one lets --version through.
func TestRunConfig(t *testing.T) {
	bad := writeFile(t, "listn = \"x\"\nmax-attempts = \"many\"\n")
	var code int
	stdout, stderr := capture(t, func() { code = run([]string{"--config", bad, "--version"}) })
	want := "emberd: " + bad + `:1: unknown key "listn" (did you mean "listen"?)` + "\n" +
		"emberd: " + bad + `:2: key "max-attempts": invalid value "many": parse error` + "\n"
	if code != 2 || stdout != "" || stderr != want {
		t.Errorf("bad file: exit %d, stdout %q, stderr:\n%s\nwant:\n%s", code, stdout, stderr, want)
	}

	good := writeFile(t, "listen = \"127.0.0.1:0\"\n")
	stdout, stderr = capture(t, func() { code = run([]string{"--config", good, "--version"}) })
	if code != 0 || stdout != "emberd "+version+"\n" || stderr != "" {
		t.Errorf("good file: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	zero := writeFile(t, "max-start-failures = 0\n")
	stdout, stderr = capture(t, func() { code = run([]string{"--config", zero, "--version"}) })
	if code != 2 || stderr != "emberd: --max-start-failures 0: must be at least 1\n" {
		t.Errorf("max-start-failures 0: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls", "on"}, `emberd: --tls "on": must be off or auto (for your own certificate give --tls-cert and --tls-key)`},
		{[]string{"--tls-cert", "c.pem"}, "emberd: --tls-cert needs --tls-key: give the certificate's private key file too"},
		{[]string{"--tls", "auto", "--tls-cert", "c.pem", "--tls-key", "k.pem"}, "emberd: --tls auto and --tls-cert/--tls-key exclude each other"},
	} {
		stdout, stderr = capture(t, func() { code = run(append(tc.args, "--version")) })
		if code != 2 || !strings.HasPrefix(stderr, tc.want) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 2 and %q", tc.args, code, stdout, stderr, tc.want)
		}
	}

	stdout, stderr = capture(t, func() { code = run([]string{"--config", filepath.Join(t.TempDir(), "none.toml"), "--version"}) })
	if code != 2 || !strings.HasPrefix(stderr, "emberd: open ") || !strings.HasSuffix(stderr, "none.toml: no such file or directory\n") {
		t.Errorf("missing file: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// renderDefaultConfig writes the packaged default config: every flag a file
// may set, commented out at its default, under its help text.
func renderDefaultConfig() string {
	var s settings
	fs := newFlagSet(&s)
	var b strings.Builder
	b.WriteString(`# emberd configuration (TOML). The packaged emberd.service starts
#   emberd --config /etc/ember/ember.toml
#
# Every emberd flag can be set here under its own name, one "key = value"
# per line; flags given on emberd's command line win over this file.
# Strings are quoted, durations too ("20s", "1m30s"); numbers and true/false
# are not. Tables, dotted keys and multi-line values are not accepted, and an
# unknown key stops emberd with the file and line.
#
# Each setting below is commented out at its default: uncomment and edit.
# Apply a change with: systemctl restart emberd
#
# This file is generated from emberd's flags: do not add settings by hand;
# run go test ./daemon/cmd/emberd -run TestDefaultConfig -update instead.
`)
	fs.VisitAll(func(f *flag.Flag) {
		if slices.Contains(config.CommandLineOnly, f.Name) {
			return
		}
		b.WriteString("\n")
		for _, line := range wrap(f.Usage, 76) {
			b.WriteString("# " + line + "\n")
		}
		fmt.Fprintf(&b, "# %s = %s\n", f.Name, tomlValue(f))
	})
	return b.String()
}

// tomlValue writes a flag's default as TOML: bare for booleans and
// numbers, a quoted string for everything else (durations included).
func tomlValue(f *flag.Flag) string {
	if g, ok := f.Value.(flag.Getter); ok {
		switch g.Get().(type) {
		case bool, int, int64, uint, uint64, float64:
			return f.DefValue
		}
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range f.DefValue {
		switch {
		case r == '"' || r == '\\':
			b.WriteString(`\` + string(r))
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// wrap splits text into lines of at most width bytes at spaces, never
// starting a line with a word of one or two bytes ("90 s)" stays whole).
func wrap(text string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(text) {
		if line != "" && len(line)+1+len(w) > width {
			carry := ""
			if i := strings.LastIndexByte(line, ' '); len(w) <= 2 && i > 0 {
				line, carry = line[:i], line[i+1:]
			}
			lines = append(lines, line)
			line = carry
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	return append(lines, line)
}

// TestDefaultConfig keeps packaging/ember.toml in step with the flags, and
// checks that every commented-out line, uncommented, is a valid setting
// that leaves its flag at the default.
func TestDefaultConfig(t *testing.T) {
	want := renderDefaultConfig()
	if *update {
		if err := os.WriteFile(defaultConfig, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(defaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("%s is not what emberd's flags give; run\n\tgo test ./daemon/cmd/emberd -run TestDefaultConfig -update\n--- want\n%s", defaultConfig, want)
	}

	// As shipped, everything is commented out: the file sets nothing.
	f, err := config.Parse(defaultConfig, got)
	if err != nil || len(f.Entries) != 0 {
		t.Fatalf("shipped file: %v, %d entries", err, len(f.Entries))
	}

	setting := regexp.MustCompile(`^# ([a-z0-9-]+) = `)
	var uncommented []string
	for line := range strings.SplitSeq(string(got), "\n") {
		if setting.MatchString(line) {
			line = strings.TrimPrefix(line, "# ")
		}
		uncommented = append(uncommented, line)
	}
	p := writeFile(t, strings.Join(uncommented, "\n"))
	f, err = config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	var s settings
	fs := newFlagSet(&s)
	if err := f.Apply(fs, nil); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, e := range f.Entries {
		keys = append(keys, e.Key)
	}
	var flags []string
	fs.VisitAll(func(fl *flag.Flag) {
		if slices.Contains(config.CommandLineOnly, fl.Name) {
			return
		}
		flags = append(flags, fl.Name)
		if v := fl.Value.String(); v != fl.DefValue {
			t.Errorf("%s: the file's default sets %q, the flag's default is %q", fl.Name, v, fl.DefValue)
		}
	})
	if !slices.Equal(keys, flags) {
		t.Errorf("keys in the file %q, flags %q", keys, flags)
	}
}

// TestManPage checks that packaging/emberd.8 documents every flag, and no
// flag that is gone, with its default.
func TestManPage(t *testing.T) {
	page, err := os.ReadFile(filepath.Join("..", "..", "..", "packaging", "emberd.8"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(page)
	var s settings
	fs := newFlagSet(&s)
	documented := map[string]bool{}
	// .B \-\-version, .BI \-\-take\-hold " DURATION": roff escapes hyphens.
	for _, m := range regexp.MustCompile(`(?m)^\.B[IR]? "?\\-\\-((?:[a-z0-9]|\\-)+)`).FindAllStringSubmatch(text, -1) {
		documented[strings.ReplaceAll(m[1], `\-`, "-")] = true
	}
	fs.VisitAll(func(f *flag.Flag) {
		if !documented[f.Name] {
			t.Errorf("emberd.8 has no .B \\-\\-%s entry", f.Name)
		}
		delete(documented, f.Name)
		def := f.DefValue
		if def == "" || def == "false" || def == "0s" {
			return
		}
		// The default as emberd -help prints it, hyphens escaped for roff.
		if !strings.Contains(text, "Default: "+strings.ReplaceAll(def, "-", `\-`)) {
			t.Errorf("emberd.8 does not give the default of --%s (%s)", f.Name, def)
		}
	})
	for name := range documented {
		t.Errorf("emberd.8 documents --%s, which emberd does not have", name)
	}
}

// TestCheckRateLimits: a bad --rate-limits is refused at start (and at a
// reload) with the flag's name and what is wrong.
func TestCheckRateLimits(t *testing.T) {
	for _, tc := range []struct{ value, want string }{
		{"", ""},
		{"off", ""},
		{"run=5/10s:2,cancel=off", ""},
		{"run=5", `--rate-limits: run=5: the rate must be N/DURATION`},
		{"requests=1/10s", `--rate-limits: operation "requests": want one of`},
	} {
		var s settings
		fs := newFlagSet(&s)
		if err := fs.Parse([]string{"--rate-limits", tc.value}); err != nil {
			t.Fatal(err)
		}
		err := checkSettings(s.opts)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.HasPrefix(err.Error(), tc.want)) {
			t.Errorf("--rate-limits %q: %v, want %q", tc.value, err, tc.want)
		}
	}
}

// TestCheckParkMemory: a negative --park-memory-mb is refused; 0 takes the
// default share of the host's memory.
func TestCheckParkMemory(t *testing.T) {
	for value, ok := range map[string]bool{"0": true, "4096": true, "-1": false} {
		var s settings
		fs := newFlagSet(&s)
		if err := fs.Parse([]string{"--park-memory-mb", value}); err != nil {
			t.Fatal(err)
		}
		err := checkSettings(s.options())
		if ok != (err == nil) || (err != nil && !strings.HasPrefix(err.Error(), "--park-memory-mb")) {
			t.Errorf("--park-memory-mb %s: %v", value, err)
		}
	}
}
