// Package config reads emberd's configuration file: a flat subset of TOML
// whose keys are emberd's command-line flag names, so that every flag can
// be set from a file without the file format knowing any of them:
//
//	# /etc/ember/ember.toml
//	listen = "0.0.0.0:7080"
//	take-hold = "20s"
//	max-attempts = 3
//
// The subset: `key = value` lines, `#` comments and blank lines; values are
// strings ("..." with TOML's escapes, '...' literal), integers, floats,
// booleans and one-line arrays of strings. Everything else TOML has (tables,
// inline tables, dotted or quoted keys, multi-line strings and arrays, dates)
// is refused with the file name and line, as are duplicate keys.
//
// A File is applied to a flag.FlagSet through the flags' own Set methods, so
// a value is valid in the file exactly when it is valid on the command line,
// and the command line wins over the file.
package config

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Kind is the TOML type of a Value.
type Kind int

// The kinds of value the subset has.
const (
	String Kind = iota + 1
	Integer
	Float
	Boolean
	Array // of strings
)

func (k Kind) String() string {
	switch k {
	case String:
		return "string"
	case Integer:
		return "integer"
	case Float:
		return "float"
	case Boolean:
		return "boolean"
	case Array:
		return "array"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Value is one value from the file. The field that matches Kind holds it.
type Value struct {
	Kind    Kind
	Str     string
	Int     int64
	Float   float64
	Bool    bool
	Strings []string
}

// FlagStrings returns what is given to the flag's Set method: the value in
// the command line's spelling, or one string per element of an array (a
// repeatable flag is set once per element, in order).
func (v Value) FlagStrings() []string {
	switch v.Kind {
	case String:
		return []string{v.Str}
	case Integer:
		return []string{strconv.FormatInt(v.Int, 10)}
	case Float:
		return []string{strconv.FormatFloat(v.Float, 'g', -1, 64)}
	case Boolean:
		return []string{strconv.FormatBool(v.Bool)}
	case Array:
		return slices.Clone(v.Strings)
	}
	return nil
}

// Equal reports whether two values are the same kind and value.
func (v Value) Equal(w Value) bool {
	return v.Kind == w.Kind && slices.Equal(v.FlagStrings(), w.FlagStrings())
}

// Entry is one `key = value` line.
type Entry struct {
	Key   string
	Line  int // 1-based
	Value Value
}

// File is a parsed configuration file.
type File struct {
	Path    string
	Entries []Entry // in file order, keys unique
}

// Error is a problem with a file, at a line of it when Line > 0. Err is the
// flag's own error when a value was refused by the flag.
type Error struct {
	Path string
	Line int
	Msg  string
	Err  error
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.Path, e.Line, e.Msg)
	}
	return e.Path + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// Load reads and parses the file at path. A file that cannot be read gives
// the *os.PathError; a file that does not parse gives an *Error.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Parse parses data as the file at path (path is used in messages only).
func Parse(path string, data []byte) (*File, error) {
	f := &File{Path: path}
	text := strings.TrimPrefix(string(data), "\uFEFF")
	first := make(map[string]int)
	for i, line := range strings.Split(text, "\n") {
		n := i + 1
		line = strings.TrimSuffix(line, "\r")
		if !utf8.ValidString(line) {
			return nil, &Error{Path: path, Line: n, Msg: "invalid UTF-8"}
		}
		e, ok, msg := parseLine(line)
		if msg != "" {
			return nil, &Error{Path: path, Line: n, Msg: msg}
		}
		if !ok {
			continue
		}
		if prev, dup := first[e.Key]; dup {
			return nil, &Error{Path: path, Line: n, Msg: fmt.Sprintf("duplicate key %q (first set on line %d)", e.Key, prev)}
		}
		first[e.Key] = n
		e.Line = n
		f.Entries = append(f.Entries, e)
	}
	return f, nil
}

// Lookup returns the entry for key.
func (f *File) Lookup(key string) (Entry, bool) {
	if f == nil {
		return Entry{}, false
	}
	for _, e := range f.Entries {
		if e.Key == key {
			return e, true
		}
	}
	return Entry{}, false
}

// Changed returns, sorted, the keys whose values differ between old and f:
// changed, added or removed (a removed key means the flag's default, or the
// command line's value, comes back). A nil file counts as an empty one.
// Values are compared as written: "20s" and "20000ms" differ.
func (f *File) Changed(old *File) []string {
	var keys []string
	var entries []Entry
	if f != nil {
		entries = f.Entries
	}
	for _, e := range entries {
		if o, ok := old.Lookup(e.Key); !ok || !o.Value.Equal(e.Value) {
			keys = append(keys, e.Key)
		}
	}
	if old != nil {
		for _, o := range old.Entries {
			if _, ok := f.Lookup(o.Key); !ok {
				keys = append(keys, o.Key)
			}
		}
	}
	slices.Sort(keys)
	return keys
}

// CommandLineOnly are flag names a file may not set: the file's own name,
// and flags that make emberd do something other than run.
var CommandLineOnly = []string{"config", "version"}

// Apply sets the flags of fs from the file, in file order, through
// fs.Set, skipping the flags named in explicit (those given on the command
// line, which win; their values in the file are not checked). An array sets
// a repeatable flag once per element and is refused for a flag that takes
// one value. Unknown keys, keys in CommandLineOnly and values the flag
// refuses are errors; every one is reported (joined, in file order), and
// the flags before a bad line may already be set, so a caller should drop
// the FlagSet on error.
func (f *File) Apply(fs *flag.FlagSet, explicit map[string]bool) error {
	if f == nil {
		return nil
	}
	var errs []error
	for _, e := range f.Entries {
		if err := f.apply(fs, explicit, e); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

func (f *File) apply(fs *flag.FlagSet, explicit map[string]bool, e Entry) error {
	fail := func(err error, format string, args ...any) error {
		return &Error{Path: f.Path, Line: e.Line, Msg: fmt.Sprintf(format, args...), Err: err}
	}
	if slices.Contains(CommandLineOnly, e.Key) {
		return fail(nil, "key %q cannot be set in a config file, only on the command line", e.Key)
	}
	fl := fs.Lookup(e.Key)
	if fl == nil {
		if s := suggest(fs, e.Key); s != "" {
			return fail(nil, "unknown key %q (did you mean %q?)", e.Key, s)
		}
		return fail(nil, "unknown key %q", e.Key)
	}
	if explicit[e.Key] {
		return nil
	}
	if e.Value.Kind == Array && takesOneValue(fl.Value) {
		return fail(nil, "key %q: takes one value, not an array", e.Key)
	}
	for _, s := range e.Value.FlagStrings() {
		if err := fs.Set(e.Key, s); err != nil {
			return fail(err, "key %q: invalid value %q: %v", e.Key, s, err)
		}
	}
	return nil
}

// takesOneValue tells the standard library's scalar flags (whose Get
// returns one value) from repeatable ones such as flag.Func.
func takesOneValue(v flag.Value) bool {
	g, ok := v.(flag.Getter)
	if !ok {
		return false
	}
	switch g.Get().(type) {
	case string, bool, int, int64, uint, uint64, float64, time.Duration:
		return true
	}
	return false
}

// suggest returns the flag name closest to key when it is close enough to
// be a typo, or "".
func suggest(fs *flag.FlagSet, key string) string {
	limit := min(max(len(key)/3, 1), 3)
	best, bestDist := "", limit+1
	fs.VisitAll(func(fl *flag.Flag) {
		if slices.Contains(CommandLineOnly, fl.Name) {
			return
		}
		if d := distance(key, fl.Name); d < bestDist {
			best, bestDist = fl.Name, d
		}
	})
	return best
}

// distance is the Levenshtein distance between a and b, in bytes (flag
// names are ASCII).
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// parseLine parses one line. ok is false for a blank or comment line; msg
// is the reason the line is refused.
func parseLine(line string) (e Entry, ok bool, msg string) {
	p := &scanner{s: line}
	p.skipSpace()
	if p.eof() || p.peek() == '#' {
		return Entry{}, false, ""
	}
	switch p.peek() {
	case '[':
		return Entry{}, false, "tables are not supported: keys are flag names, at the top level"
	case '"', '\'':
		return Entry{}, false, "quoted keys are not supported: keys are flag names"
	case '=':
		return Entry{}, false, "missing key before \"=\""
	}
	start := p.i
	for !p.eof() && isBareKeyChar(p.peek()) {
		p.i++
	}
	key := line[start:p.i]
	if key == "" {
		return Entry{}, false, fmt.Sprintf("expected key = value, found %q", rest(line[start:]))
	}
	if !p.eof() && !strings.ContainsRune(" \t=.", rune(p.peek())) {
		r, _ := utf8.DecodeRuneInString(line[p.i:])
		word := line[start:]
		if j := strings.IndexAny(word, " \t="); j >= 0 {
			word = word[:j]
		}
		return Entry{}, false, fmt.Sprintf("invalid character %q in key %q (keys are flag names: letters, digits, \"-\" and \"_\")", r, word)
	}
	p.skipSpace()
	switch {
	case !p.eof() && p.peek() == '.':
		return Entry{}, false, fmt.Sprintf("dotted keys are not supported: %q", rest(line[start:]))
	case p.eof() || p.peek() != '=':
		return Entry{}, false, fmt.Sprintf("expected \"=\" after key %q", key)
	}
	p.i++
	p.skipSpace()
	if p.eof() || p.peek() == '#' {
		return Entry{}, false, fmt.Sprintf("key %q: missing value", key)
	}
	v, msg := p.value()
	if msg != "" {
		return Entry{}, false, fmt.Sprintf("key %q: %s", key, msg)
	}
	p.skipSpace()
	if !p.eof() && p.peek() != '#' {
		return Entry{}, false, fmt.Sprintf("key %q: unexpected %q after the value", key, rest(line[p.i:]))
	}
	return Entry{Key: key, Value: v}, true, ""
}

// rest is s up to a comment, trimmed, for messages.
func rest(s string) string {
	if i := strings.IndexByte(s, '#'); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

func isBareKeyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// scanner walks one line.
type scanner struct {
	s string
	i int
}

func (p *scanner) eof() bool  { return p.i >= len(p.s) }
func (p *scanner) peek() byte { return p.s[p.i] }

func (p *scanner) skipSpace() {
	for !p.eof() && (p.peek() == ' ' || p.peek() == '\t') {
		p.i++
	}
}

// value parses the value at the cursor; msg says why it is refused.
func (p *scanner) value() (v Value, msg string) {
	switch p.peek() {
	case '"', '\'':
		s, msg := p.str()
		return Value{Kind: String, Str: s}, msg
	case '[':
		return p.array()
	case '{':
		return Value{}, "inline tables are not supported"
	}
	start := p.i
	for !p.eof() && !strings.ContainsRune(" \t#,]", rune(p.peek())) {
		p.i++
	}
	return scalar(p.s[start:p.i], rest(p.s[start:]))
}

// str parses a basic or literal string at the cursor.
func (p *scanner) str() (string, string) {
	q := p.peek()
	if strings.HasPrefix(p.s[p.i:], strings.Repeat(string(q), 3)) {
		return "", "multi-line strings are not supported"
	}
	p.i++
	var b strings.Builder
	for !p.eof() {
		r, size := utf8.DecodeRuneInString(p.s[p.i:])
		switch {
		case r == rune(q):
			p.i += size
			return b.String(), ""
		case r == '\\' && q == '"':
			r, msg := p.escape()
			if msg != "" {
				return "", msg
			}
			b.WriteRune(r)
			continue
		case r < 0x20 && r != '\t' || r == 0x7f:
			return "", fmt.Sprintf("control character %U in a string (write it as an escape)", r)
		}
		b.WriteRune(r)
		p.i += size
	}
	return "", "unterminated string"
}

// escape parses a backslash escape of a basic string at the cursor.
func (p *scanner) escape() (rune, string) {
	p.i++ // the backslash
	if p.eof() {
		return 0, "unterminated string"
	}
	c := p.peek()
	p.i++
	switch c {
	case 'b':
		return '\b', ""
	case 't':
		return '\t', ""
	case 'n':
		return '\n', ""
	case 'f':
		return '\f', ""
	case 'r':
		return '\r', ""
	case '"':
		return '"', ""
	case '\\':
		return '\\', ""
	case 'u', 'U':
		n := 4
		if c == 'U' {
			n = 8
		}
		if p.i+n > len(p.s) {
			return 0, fmt.Sprintf("invalid escape \\%c%s: want %d hex digits", c, p.s[p.i:], n)
		}
		h := p.s[p.i : p.i+n]
		u, err := strconv.ParseUint(h, 16, 32)
		if err != nil || strings.ContainsAny(h, "+-_") {
			return 0, fmt.Sprintf("invalid escape \\%c%s: want %d hex digits", c, h, n)
		}
		p.i += n
		if u > utf8.MaxRune || u >= 0xD800 && u <= 0xDFFF {
			return 0, fmt.Sprintf("invalid escape \\%c%s: not a Unicode scalar value", c, h)
		}
		return rune(u), ""
	}
	r, _ := utf8.DecodeRuneInString(p.s[p.i-1:])
	return 0, fmt.Sprintf("invalid escape \\%c in a string", r)
}

// array parses a one-line array of strings at the cursor.
func (p *scanner) array() (Value, string) {
	const unterminated = "unterminated array (an array must end on the line it starts)"
	p.i++ // [
	v := Value{Kind: Array, Strings: []string{}}
	for {
		p.skipSpace()
		if p.eof() || p.peek() == '#' {
			return Value{}, unterminated
		}
		if p.peek() == ']' {
			p.i++
			return v, ""
		}
		if c := p.peek(); c != '"' && c != '\'' {
			return Value{}, "arrays may only hold strings"
		}
		s, msg := p.str()
		if msg != "" {
			return Value{}, msg
		}
		v.Strings = append(v.Strings, s)
		p.skipSpace()
		switch {
		case p.eof() || p.peek() == '#':
			return Value{}, unterminated
		case p.peek() == ',':
			p.i++
		case p.peek() == ']':
		default:
			return Value{}, fmt.Sprintf("expected \",\" or \"]\" in array, found %q", rest(p.s[p.i:]))
		}
	}
}

var (
	decInt   = regexp.MustCompile(`^[+-]?(0|[1-9](_?[0-9])*)$`)
	hexInt   = regexp.MustCompile(`^0x[0-9A-Fa-f](_?[0-9A-Fa-f])*$`)
	octInt   = regexp.MustCompile(`^0o[0-7](_?[0-7])*$`)
	binInt   = regexp.MustCompile(`^0b[01](_?[01])*$`)
	floatNum = regexp.MustCompile(`^[+-]?(0|[1-9](_?[0-9])*)((\.[0-9](_?[0-9])*)([eE][+-]?[0-9](_?[0-9])*)?|[eE][+-]?[0-9](_?[0-9])*)$`)
	special  = regexp.MustCompile(`^[+-]?(inf|nan)$`)
	dateTime = regexp.MustCompile(`^([0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{2}:[0-9]{2})`)
)

// scalar parses a bare value: a boolean or a number. text is the rest of
// the line, for the message when tok is a string missing its quotes.
func scalar(tok, text string) (Value, string) {
	switch {
	case tok == "":
		return Value{}, "missing value"
	case tok == "true" || tok == "false":
		return Value{Kind: Boolean, Bool: tok == "true"}, ""
	case decInt.MatchString(tok) || hexInt.MatchString(tok) || octInt.MatchString(tok) || binInt.MatchString(tok):
		n, err := strconv.ParseInt(strings.ReplaceAll(tok, "_", ""), 0, 64)
		if err != nil {
			return Value{}, fmt.Sprintf("integer %s out of range", tok)
		}
		return Value{Kind: Integer, Int: n}, ""
	case floatNum.MatchString(tok):
		x, err := strconv.ParseFloat(strings.ReplaceAll(tok, "_", ""), 64)
		if err != nil {
			return Value{}, fmt.Sprintf("float %s out of range", tok)
		}
		return Value{Kind: Float, Float: x}, ""
	case special.MatchString(tok):
		x := math.Inf(1)
		if strings.HasSuffix(tok, "nan") {
			x = math.NaN()
		} else if tok[0] == '-' {
			x = math.Inf(-1)
		}
		return Value{Kind: Float, Float: x}, ""
	case dateTime.MatchString(tok):
		return Value{}, "dates and times are not supported"
	}
	return Value{}, fmt.Sprintf("%s is not a string, number or boolean (strings are quoted: %s)", text, strconv.Quote(text))
}
