package runpod

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParsePyLiteral(t *testing.T) {
	good := map[string]string{
		`{'a': 1, "b": [True, False, None], 'c': (1.5, -2e3)}`: `{"a":1,"b":[true,false,null],"c":[1.5,-2000]}`,
		`{'s': 'it\'s \\ \n \t \x41 \u00e9 \U0001f600'}`:       `{"s":"it's \\ \n \t A é 😀"}`,
		`{"q": "say 'hi'"}`:        `{"q":"say 'hi'"}`,
		`{1: 'int key'}`:           `{"1":"int key"}`,
		` [ ] `:                    `[]`,
		`{}`:                       `{}`,
		`{'nested': {'d': {}}}`:    `{"nested":{"d":{}}}`,
		`{'trailing': [1, 2, ], }`: `{"trailing":[1,2]}`,
	}
	for in, want := range good {
		v, err := ParsePyLiteral(in)
		if err != nil {
			t.Errorf("ParsePyLiteral(%s): %v", in, err)
			continue
		}
		b, _ := json.Marshal(v)
		if string(b) != want {
			t.Errorf("ParsePyLiteral(%s) = %s, want %s", in, b, want)
		}
	}
	for _, in := range []string{`{'a' 1}`, `{'a': 1`, `'open`, `{'a': nan}`, `{'a': 1} x`, `[1 2]`, `{'a': '\x4'}`, strings.Repeat("[", 100) + strings.Repeat("]", 100)} {
		if v, err := ParsePyLiteral(in); err == nil {
			t.Errorf("ParsePyLiteral(%s) = %v, want an error", in, v)
		}
	}
}
