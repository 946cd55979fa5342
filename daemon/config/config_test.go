package config

import (
	"errors"
	"flag"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const path = "/etc/ember/ember.toml"

func TestParseValues(t *testing.T) {
	src := "\uFEFF# a comment\n" +
		"\n" +
		"   \t\n" +
		"basic = \"a\\tb\\n\\\"q\\\" \\\\ \\u00e9\\U0001F525 \\b\\f\\r\" # trailing comment\n" +
		"literal = 'C:\\path\\no\\escapes \"here\"'\n" +
		"empty = \"\"\n" +
		"unicode = \"héllo # not a comment\"\n" +
		"int = 42\n" +
		"neg = -17\n" +
		"plus = +5\n" +
		"zero = 0\n" +
		"under = 1_000_000\n" +
		"hex = 0xDEAD_beef\n" +
		"oct = 0o755\n" +
		"bin = 0b1010\n" +
		"float = 3.25\n" +
		"exp = 6.02e23\n" +
		"expneg = -1E-3\n" +
		"floatunder = 9_224.5\n" +
		"inf = inf\n" +
		"neginf = -inf\n" +
		"t = true\n" +
		"f=false\n" +
		"arr = [ \"a\", 'b' , \"c\\n\", ] # comment\n" +
		"emptyarr = []\n" +
		"snake_case_Key-9 = 1\r\n" +
		"  indented\t=\t\"x\"\t\n"
	f, err := Parse(path, []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{
		{"basic", 4, Value{Kind: String, Str: "a\tb\n\"q\" \\ é🔥 \b\f\r"}},
		{"literal", 5, Value{Kind: String, Str: `C:\path\no\escapes "here"`}},
		{"empty", 6, Value{Kind: String, Str: ""}},
		{"unicode", 7, Value{Kind: String, Str: "héllo # not a comment"}},
		{"int", 8, Value{Kind: Integer, Int: 42}},
		{"neg", 9, Value{Kind: Integer, Int: -17}},
		{"plus", 10, Value{Kind: Integer, Int: 5}},
		{"zero", 11, Value{Kind: Integer, Int: 0}},
		{"under", 12, Value{Kind: Integer, Int: 1000000}},
		{"hex", 13, Value{Kind: Integer, Int: 0xDEADBEEF}},
		{"oct", 14, Value{Kind: Integer, Int: 0o755}},
		{"bin", 15, Value{Kind: Integer, Int: 10}},
		{"float", 16, Value{Kind: Float, Float: 3.25}},
		{"exp", 17, Value{Kind: Float, Float: 6.02e23}},
		{"expneg", 18, Value{Kind: Float, Float: -1e-3}},
		{"floatunder", 19, Value{Kind: Float, Float: 9224.5}},
		{"inf", 20, Value{Kind: Float, Float: math.Inf(1)}},
		{"neginf", 21, Value{Kind: Float, Float: math.Inf(-1)}},
		{"t", 22, Value{Kind: Boolean, Bool: true}},
		{"f", 23, Value{Kind: Boolean, Bool: false}},
		{"arr", 24, Value{Kind: Array, Strings: []string{"a", "b", "c\n"}}},
		{"emptyarr", 25, Value{Kind: Array, Strings: []string{}}},
		{"snake_case_Key-9", 26, Value{Kind: Integer, Int: 1}},
		{"indented", 27, Value{Kind: String, Str: "x"}},
	}
	if !reflect.DeepEqual(f.Entries, want) {
		t.Errorf("entries:\n got %+v\nwant %+v", f.Entries, want)
	}
	if f.Path != path {
		t.Errorf("path %q", f.Path)
	}

	nan, err := Parse(path, []byte("x = nan\ny = -nan\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range nan.Entries {
		if e.Value.Kind != Float || !math.IsNaN(e.Value.Float) {
			t.Errorf("%s: %+v, want NaN", e.Key, e.Value)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ name, src, want string }{
		{"table", "a = 1\n[server]\n", "2: tables are not supported: keys are flag names, at the top level"},
		{"array of tables", "[[x]]", "1: tables are not supported: keys are flag names, at the top level"},
		{"inline table", "x = { a = 1 }", `1: key "x": inline tables are not supported`},
		{"multi-line basic string", `x = """abc"""`, `1: key "x": multi-line strings are not supported`},
		{"multi-line literal string", `x = '''abc'''`, `1: key "x": multi-line strings are not supported`},
		{"multi-line array", "x = [\n  \"a\",\n]", `1: key "x": unterminated array (an array must end on the line it starts)`},
		{"array comment", `x = ["a", # b`, `1: key "x": unterminated array (an array must end on the line it starts)`},
		{"array after element", `x = ["a"`, `1: key "x": unterminated array (an array must end on the line it starts)`},
		{"array of ints", `x = [1, 2]`, `1: key "x": arrays may only hold strings`},
		{"nested array", `x = [["a"]]`, `1: key "x": arrays may only hold strings`},
		{"array missing comma", `x = ["a" "b"]`, `1: key "x": expected "," or "]" in array, found "\"b\"]"`},
		{"duplicate", "listen = \"a\"\n\n# again\nlisten = \"b\"", `4: duplicate key "listen" (first set on line 1)`},
		{"quoted key", `"listen" = "a"`, "1: quoted keys are not supported: keys are flag names"},
		{"literal quoted key", `'listen' = "a"`, "1: quoted keys are not supported: keys are flag names"},
		{"dotted key", `server.listen = "a"`, `1: dotted keys are not supported: "server.listen = \"a\""`},
		{"dotted key spaced", `server . listen = "a"`, `1: dotted keys are not supported: "server . listen = \"a\""`},
		{"no equals", `listen "a"`, `1: expected "=" after key "listen"`},
		{"key only", "listen", `1: expected "=" after key "listen"`},
		{"colon", `listen: "a"`, `1: invalid character ':' in key "listen:" (keys are flag names: letters, digits, "-" and "_")`},
		{"non-ascii key", `lïsten = "a"`, `1: invalid character 'ï' in key "lïsten" (keys are flag names: letters, digits, "-" and "_")`},
		{"missing key", `= "a"`, `1: missing key before "="`},
		{"junk line", `@x = 1`, `1: expected key = value, found "@x = 1"`},
		{"missing value", "listen =", `1: key "listen": missing value`},
		{"missing value comment", "listen = # none", `1: key "listen": missing value`},
		{"comma value", "listen = ,", `1: key "listen": missing value`},
		{"bare string", "take-hold = 20s", `1: key "take-hold": 20s is not a string, number or boolean (strings are quoted: "20s")`},
		{"bare address", "listen = 127.0.0.1:7080 # api", `1: key "listen": 127.0.0.1:7080 is not a string, number or boolean (strings are quoted: "127.0.0.1:7080")`},
		{"bare words", "log-level = debug please", `1: key "log-level": debug please is not a string, number or boolean (strings are quoted: "debug please")`},
		{"capital bool", "x = True", `1: key "x": True is not a string, number or boolean (strings are quoted: "True")`},
		{"leading zero", "x = 007", `1: key "x": 007 is not a string, number or boolean (strings are quoted: "007")`},
		{"double underscore", "x = 1__0", `1: key "x": 1__0 is not a string, number or boolean (strings are quoted: "1__0")`},
		{"signed hex", "x = -0x10", `1: key "x": -0x10 is not a string, number or boolean (strings are quoted: "-0x10")`},
		{"int range", "x = 9223372036854775808", `1: key "x": integer 9223372036854775808 out of range`},
		{"hex range", "x = 0x1_0000_0000_0000_0000", `1: key "x": integer 0x1_0000_0000_0000_0000 out of range`},
		{"float range", "x = 1e999", `1: key "x": float 1e999 out of range`},
		{"date", "x = 1979-05-27", `1: key "x": dates and times are not supported`},
		{"datetime", "x = 1979-05-27T07:32:00Z", `1: key "x": dates and times are not supported`},
		{"time", "x = 07:32:00", `1: key "x": dates and times are not supported`},
		{"trailing text", `listen = "a" "b"`, `1: key "listen": unexpected "\"b\"" after the value`},
		{"trailing comma", `x = 1,`, `1: key "x": unexpected "," after the value`},
		{"unterminated basic", `x = "abc`, `1: key "x": unterminated string`},
		{"unterminated literal", `x = 'abc`, `1: key "x": unterminated string`},
		{"unterminated escape", `x = "abc\`, `1: key "x": unterminated string`},
		{"bad escape", `x = "a\qb"`, `1: key "x": invalid escape \q in a string`},
		{"bad escape non-ascii", `x = "a\éb"`, `1: key "x": invalid escape \é in a string`},
		{"short unicode escape", `x = "\u12"`, `1: key "x": invalid escape \u12": want 4 hex digits`},
		{"bad unicode escape", `x = "\u12G4"`, `1: key "x": invalid escape \u12G4: want 4 hex digits`},
		{"signed unicode escape", `x = "\u+123"`, `1: key "x": invalid escape \u+123: want 4 hex digits`},
		{"surrogate escape", `x = "\uD800"`, `1: key "x": invalid escape \uD800: not a Unicode scalar value`},
		{"big escape", `x = "\U00110000"`, `1: key "x": invalid escape \U00110000: not a Unicode scalar value`},
		{"control char", "x = \"a\x01b\"", `1: key "x": control character U+0001 in a string (write it as an escape)`},
		{"control char literal", "x = 'a\x7fb'", `1: key "x": control character U+007F in a string (write it as an escape)`},
		{"bare carriage return", "x = \"a\rb\"", `1: key "x": control character U+000D in a string (write it as an escape)`},
		{"invalid utf-8", "a = 1\nx = \"\xff\"", "2: invalid UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Parse(path, []byte(tc.src))
			if err == nil {
				t.Fatalf("parsed %q: %+v", tc.src, f.Entries)
			}
			if got, want := err.Error(), path+":"+tc.want; got != want {
				t.Errorf("%q:\n got %s\nwant %s", tc.src, got, want)
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.Line == 0 || ce.Path != path {
				t.Errorf("%q: error %#v is not an *Error with a line", tc.src, err)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "ember.toml")
	if err := os.WriteFile(p, []byte("listen = \"0.0.0.0:7080\"\nmax-attempts = x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	if want := p + `:2: key "max-attempts": x is not a string, number or boolean (strings are quoted: "x")`; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	_, err = Load(filepath.Join(dir, "missing.toml"))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "missing.toml") {
		t.Errorf("missing file: %v", err)
	}
}

// flags is a flag set like emberd's: durations, ints, bools, strings,
// floats and a repeatable flag.
type flags struct {
	fs       *flag.FlagSet
	listen   string
	takeHold time.Duration
	attempts int
	big      int64
	count    uint
	verbose  bool
	ratio    float64
	gpus     []string
}

func newFlags() *flags {
	f := &flags{fs: flag.NewFlagSet("emberd", flag.ContinueOnError)}
	f.fs.SetOutput(io.Discard)
	f.fs.StringVar(&f.listen, "listen", "127.0.0.1:7080", "")
	f.fs.DurationVar(&f.takeHold, "take-hold", 20*time.Second, "")
	f.fs.IntVar(&f.attempts, "max-attempts", 3, "")
	f.fs.Int64Var(&f.big, "big", 0, "")
	f.fs.UintVar(&f.count, "count", 0, "")
	f.fs.BoolVar(&f.verbose, "verbose", false, "")
	f.fs.Float64Var(&f.ratio, "ratio", 0.5, "")
	f.fs.Func("gpu", "repeatable", func(s string) error {
		if s == "" {
			return errors.New("empty GPU name")
		}
		f.gpus = append(f.gpus, s)
		return nil
	})
	f.fs.String("config", "", "")
	f.fs.Bool("version", false, "")
	return f
}

// explicit parses args and returns the flags they set, as emberd does.
func (f *flags) explicit(t *testing.T, args ...string) map[string]bool {
	t.Helper()
	if err := f.fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	m := make(map[string]bool)
	f.fs.Visit(func(fl *flag.Flag) { m[fl.Name] = true })
	return m
}

func TestApplyRoundTrip(t *testing.T) {
	file, err := Parse(path, []byte(`# every kind of flag
listen = "0.0.0.0:9000"
take-hold = "1m30s"
max-attempts = 7
big = 0x7fff_ffff_ffff
count = 12
verbose = true
ratio = 0.25
gpu = ["H100", 'A100']
`))
	if err != nil {
		t.Fatal(err)
	}
	f := newFlags()
	if err := file.Apply(f.fs, f.explicit(t)); err != nil {
		t.Fatal(err)
	}
	got := []any{f.listen, f.takeHold, f.attempts, f.big, f.count, f.verbose, f.ratio, f.gpus}
	want := []any{"0.0.0.0:9000", 90 * time.Second, 7, int64(0x7fffffffffff), uint(12), true, 0.25, []string{"H100", "A100"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("flags after Apply:\n got %v\nwant %v", got, want)
	}

	// Numbers and booleans also work when written as strings, and an int
	// flag takes a TOML float that is whole, as the command line would.
	file, err = Parse(path, []byte("max-attempts = \"5\"\nverbose = \"false\"\nratio = 2\ncount = 4.0\n"))
	if err != nil {
		t.Fatal(err)
	}
	f = newFlags()
	if err := file.Apply(f.fs, f.explicit(t)); err != nil {
		t.Fatal(err)
	}
	if f.attempts != 5 || f.verbose || f.ratio != 2 || f.count != 4 {
		t.Errorf("got attempts=%d verbose=%v ratio=%v count=%d", f.attempts, f.verbose, f.ratio, f.count)
	}
}

func TestApplyCommandLineWins(t *testing.T) {
	file, err := Parse(path, []byte("listen = \"0.0.0.0:9000\"\ntake-hold = \"5s\"\nmax-attempts = 9\nverbose = true\n"))
	if err != nil {
		t.Fatal(err)
	}
	f := newFlags()
	explicit := f.explicit(t, "--listen", "127.0.0.1:1", "--verbose=false")
	if err := file.Apply(f.fs, explicit); err != nil {
		t.Fatal(err)
	}
	if f.listen != "127.0.0.1:1" || f.verbose || f.takeHold != 5*time.Second || f.attempts != 9 {
		t.Errorf("got listen=%s verbose=%v take-hold=%s max-attempts=%d", f.listen, f.verbose, f.takeHold, f.attempts)
	}
	// A flag given on the command line is not checked in the file either:
	// the file's value is never used.
	file, err = Parse(path, []byte("take-hold = \"2x\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	f = newFlags()
	if err := file.Apply(f.fs, f.explicit(t, "-take-hold=1s")); err != nil || f.takeHold != time.Second {
		t.Errorf("err %v, take-hold %s", err, f.takeHold)
	}
	// A key the file sets shows up in fs.Visit afterwards, as if given.
	visited := false
	f.fs.Visit(func(fl *flag.Flag) { visited = visited || fl.Name == "take-hold" })
	if !visited {
		t.Error("take-hold not visited")
	}
}

func TestApplyErrors(t *testing.T) {
	for _, tc := range []struct{ name, src, want string }{
		{"unknown with suggestion", "verbose = true\nmax-attempts = 2\nlistn = \"x\"", `3: unknown key "listn" (did you mean "listen"?)`},
		{"underscore", "take_hold = \"1s\"", `1: unknown key "take_hold" (did you mean "take-hold"?)`},
		{"two typos", "max-atempt = 3", `1: unknown key "max-atempt" (did you mean "max-attempts"?)`},
		{"unknown, nothing close", "colour = \"red\"", `1: unknown key "colour"`},
		{"short key, nothing close", "x = 1", `1: unknown key "x"`},
		{"not suggesting config", "confi = \"x\"", `1: unknown key "confi"`},
		{"config", "config = \"/etc/other.toml\"", `1: key "config" cannot be set in a config file, only on the command line`},
		{"version", "version = true", `1: key "version" cannot be set in a config file, only on the command line`},
		{"bad duration", "take-hold = \"2x\"", `1: key "take-hold": invalid value "2x": parse error`},
		{"duration without unit", "take-hold = 20", `1: key "take-hold": invalid value "20": parse error`},
		{"bad int", "max-attempts = \"three\"", `1: key "max-attempts": invalid value "three": parse error`},
		{"fractional int", "max-attempts = 2.5", `1: key "max-attempts": invalid value "2.5": parse error`},
		{"int range", "max-attempts = \"99999999999999999999\"", `1: key "max-attempts": invalid value "99999999999999999999": value out of range`},
		{"negative uint", "count = -1", `1: key "count": invalid value "-1": parse error`},
		{"bad bool", "verbose = \"yes please\"", `1: key "verbose": invalid value "yes please": parse error`},
		{"func flag error", "gpu = [\"H100\", \"\"]", `1: key "gpu": invalid value "": empty GPU name`},
		{"array for scalar", "listen = [\"a\"]", `1: key "listen": takes one value, not an array`},
		{"empty array for scalar", "take-hold = []", `1: key "take-hold": takes one value, not an array`},
		{"several", "listn = 1\nmax-attempts = 3\ntake-hold = \"x\"\nversion = false",
			path + `:1: unknown key "listn" (did you mean "listen"?)` + "\n" +
				path + `:3: key "take-hold": invalid value "x": parse error` + "\n" +
				path + `:4: key "version" cannot be set in a config file, only on the command line`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file, err := Parse(path, []byte(tc.src))
			if err != nil {
				t.Fatal(err)
			}
			f := newFlags()
			err = file.Apply(f.fs, f.explicit(t))
			want := tc.want
			if !strings.HasPrefix(want, path) {
				want = path + ":" + want
			}
			if err == nil || err.Error() != want {
				t.Errorf("got  %v\nwant %s", err, want)
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.Line == 0 {
				t.Errorf("error %#v is not an *Error with a line", err)
			}
		})
	}

	// The flag's own error stays reachable.
	file, _ := Parse(path, []byte("gpu = [\"\"]"))
	f := newFlags()
	err := file.Apply(f.fs, nil)
	var ce *Error
	if !errors.As(err, &ce) || ce.Err == nil || ce.Err.Error() != "empty GPU name" {
		t.Errorf("Err not kept: %#v", err)
	}
	// A nil file applies nothing.
	if err := (*File)(nil).Apply(f.fs, nil); err != nil {
		t.Error(err)
	}
}

func TestChanged(t *testing.T) {
	parse := func(src string) *File {
		t.Helper()
		f, err := Parse(path, []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	old := parse(`listen = "a"
take-hold = "20s"
max-attempts = 3
verbose = true
gpu = ["a", "b"]
ratio = 0.5
removed = 1
`)
	cur := parse(`# reordered, reformatted, some changed
max-attempts = 0x3
gpu = ["a", "c"]
listen = 'a'
take-hold = "20000ms"
verbose = "true"
ratio = 5e-1
added = "x"
`)
	want := []string{"added", "gpu", "removed", "take-hold", "verbose"}
	if got := cur.Changed(old); !reflect.DeepEqual(got, want) {
		t.Errorf("Changed = %q, want %q", got, want)
	}
	if got := old.Changed(old); len(got) != 0 {
		t.Errorf("unchanged file: %q", got)
	}
	if got := cur.Changed(nil); !reflect.DeepEqual(got, []string{"added", "gpu", "listen", "max-attempts", "ratio", "take-hold", "verbose"}) {
		t.Errorf("against nil: %q", got)
	}
	if got := (*File)(nil).Changed(old); !reflect.DeepEqual(got, []string{"gpu", "listen", "max-attempts", "ratio", "removed", "take-hold", "verbose"}) {
		t.Errorf("nil against old: %q", got)
	}
	nan1, nan2 := parse("x = nan"), parse("x = -nan")
	if got := nan1.Changed(nan2); len(got) != 0 {
		t.Errorf("NaN: %q", got)
	}
}

func TestFlagStrings(t *testing.T) {
	for _, tc := range []struct {
		v    Value
		want []string
	}{
		{Value{Kind: String, Str: "a b"}, []string{"a b"}},
		{Value{Kind: Integer, Int: -3}, []string{"-3"}},
		{Value{Kind: Float, Float: 1e21}, []string{"1e+21"}},
		{Value{Kind: Float, Float: math.Inf(-1)}, []string{"-Inf"}},
		{Value{Kind: Boolean, Bool: true}, []string{"true"}},
		{Value{Kind: Array, Strings: []string{"x", "y"}}, []string{"x", "y"}},
		{Value{}, nil},
	} {
		if got := tc.v.FlagStrings(); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%+v: got %q, want %q", tc.v, got, tc.want)
		}
	}
	if Array.String() != "array" || Kind(0).String() != "Kind(0)" {
		t.Error("Kind.String")
	}
}

func TestDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		d    int
	}{
		{"", "", 0}, {"abc", "", 3}, {"", "ab", 2}, {"listn", "listen", 1},
		{"kitten", "sitting", 3}, {"take_hold", "take-hold", 1}, {"same", "same", 0},
	} {
		if d := distance(tc.a, tc.b); d != tc.d {
			t.Errorf("distance(%q, %q) = %d, want %d", tc.a, tc.b, d, tc.d)
		}
	}
}

// FuzzParse checks that the parser never panics, that what it accepts
// applies cleanly as strings, and that every entry has a line.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"listen = \"127.0.0.1:7080\"\ntake-hold = '20s'\nmax-attempts = 3\n",
		"x = [\"a\", 'b',]\ny = 1_000\nz = -inf\nw = 0b1\n",
		"x = \"\\u00e9\\U0001F525\\\"\" # c\n[t]\n",
		"a.b = 1\n\"q\" = 2\n= 3\nx = {}\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		file, err := Parse(path, []byte(src))
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || ce.Line < 1 {
				t.Fatalf("error without a line: %v", err)
			}
			return
		}
		seen := map[string]bool{}
		for _, e := range file.Entries {
			if e.Line < 1 || e.Key == "" || seen[e.Key] || e.Value.Kind < String || e.Value.Kind > Array {
				t.Fatalf("bad entry %+v", e)
			}
			seen[e.Key] = true
		}
		if len(file.Changed(file)) != 0 {
			t.Fatal("a file differs from itself")
		}
	})
}
