package spec

import "fmt"

// FieldError is a validation failure naming the offending field by its
// JSON name. The API adapters answer it with 400 (HTTP) or
// InvalidArgument (gRPC), its text as the message.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Errorf makes a *FieldError for field, its message formatted as
// fmt.Sprintf does.
func Errorf(field, format string, a ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, a...)}
}
