package main

import (
	"fmt"
	"strings"
	"unicode/utf16"
)

// pyDumps renders an ordered object of strings as Python's json.dumps does by default:
// ", " and ": " separators and ensure_ascii escaping. The SDK's exception reports are built
// this way, and reproducing them keeps the error string byte-identical in shape.
func pyDumps(pairs [][2]string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, p := range pairs {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(pyQuote(p[0]))
		b.WriteString(": ")
		b.WriteString(pyQuote(p[1]))
	}
	b.WriteByte('}')
	return b.String()
}

// pyQuote is json.dumps(s) with ensure_ascii=True: short escapes for the usual control
// characters, \uXXXX (lowercase hex, surrogate pairs above the BMP) for everything else
// outside printable ASCII.
func pyQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			writePyRune(&b, r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func writePyRune(b *strings.Builder, r rune) {
	switch {
	case r >= 0x20 && r <= 0x7e: // Python escapes everything outside ' '..'~', DEL included
		b.WriteRune(r)
	case r > 0xffff:
		hi, lo := utf16.EncodeRune(r)
		fmt.Fprintf(b, `\u%04x\u%04x`, hi, lo)
	default:
		fmt.Fprintf(b, `\u%04x`, r)
	}
}
