package plugin

import (
	"fmt"
	"reflect"
	"strings"
	"unicode"
)

// esc makes a string safe to print on a terminal: its control characters (ESC, which starts a sequence
// that moves the cursor, repaints the screen or writes the clipboard; the 8-bit C1 controls; BEL and
// the rest) are printed as \u escapes. Newlines and tabs stay.
func esc(s string) string {
	if !strings.ContainsFunc(s, isControl) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if isControl(r) {
			_, _ = fmt.Fprintf(&b, "\\u%04x", r)
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

func isControl(r rune) bool { return r != '\n' && r != '\t' && unicode.IsControl(r) }

// escapeAll escapes every string a report holds, in place, before it is printed as text: names of
// objects in a tenant's schema (in drift details), condition and event messages, display names and the
// rest come from people and programs the reader does not control. (JSON and YAML quote them already.)
func escapeAll(v any) { escapeValue(reflect.ValueOf(v)) }

func escapeValue(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			escapeValue(v.Elem())
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if f := v.Field(i); f.CanSet() {
				escapeValue(f)
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			escapeValue(v.Index(i))
		}
	case reflect.Map:
		if v.Type().Elem().Kind() != reflect.String {
			return // no report holds one; its values could not be set in place
		}
		for _, k := range v.MapKeys() {
			v.SetMapIndex(k, reflect.ValueOf(esc(v.MapIndex(k).String())).Convert(v.Type().Elem()))
		}
	case reflect.String:
		if v.CanSet() {
			v.SetString(esc(v.String()))
		}
	}
}
