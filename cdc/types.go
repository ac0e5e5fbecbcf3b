package cdc

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// DecodeValue converts one value in PostgreSQL's text output format, of the
// type with the given OID, into the Go value mapping expressions see:
//
//	int2, int4, int8                 int64
//	float4, float8                   float64 (NaN, ±Inf included)
//	numeric                          float64 (NaN and ±Infinity included)
//	bool                             bool
//	text, varchar, name, "char"      string
//	bpchar                           string without trailing pad spaces, as a cast to text gives
//	bytea                            []byte
//	uuid, inet, cidr, time, timetz,  string, in PostgreSQL's text form
//	interval
//	date, timestamp, timestamptz     time.Time (timestamp and date in UTC); "infinity" and
//	                                 "-infinity" stay strings
//	json, jsonb                      map[string]any, []any, string, float64, bool or nil
//	arrays of the above              []any of element values (nil for NULL elements),
//	                                 nested for multi-dimensional arrays
//	anything else (enums, domains,   the text as a string
//	user types)
//
// Numeric becomes float64 only here, for expressions: the JSON rendering of
// a numeric column (package mapping) keeps its exact decimal text.
//
// m resolves array OIDs to their element types and parses dates and
// timestamps; it is only read, so one Map may be shared by goroutines that
// do not register types on it. The text is assumed to be in the format a
// session with DateStyle ISO produces.
func DecodeValue(m *pgtype.Map, oid uint32, text []byte) (any, error) {
	v, err := decodeValue(m, oid, text)
	if err != nil {
		return nil, fmt.Errorf("decode %s value: %w", typeName(m, oid), err)
	}
	return v, nil
}

func typeName(m *pgtype.Map, oid uint32) string {
	if t, ok := m.TypeForOID(oid); ok {
		return t.Name
	}
	return fmt.Sprintf("type %d", oid)
}

func decodeValue(m *pgtype.Map, oid uint32, text []byte) (any, error) {
	switch oid {
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID:
		return strconv.ParseInt(string(text), 10, 64)
	case pgtype.Float4OID, pgtype.Float8OID, pgtype.NumericOID:
		f, err := strconv.ParseFloat(string(text), 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return nil, err
		}
		return f, nil
	case pgtype.BoolOID:
		switch string(text) {
		case "t", "true":
			return true, nil
		case "f", "false":
			return false, nil
		}
		return nil, fmt.Errorf("invalid boolean %q", text)
	case pgtype.BPCharOID:
		return string(TrimPad(text)), nil
	case pgtype.ByteaOID:
		return AppendBytea(nil, text)
	case pgtype.DateOID:
		var d pgtype.Date
		if err := m.Scan(oid, pgtype.TextFormatCode, text, &d); err != nil {
			return nil, err
		}
		return timeOrInfinity(d.Time, d.InfinityModifier), nil
	case pgtype.TimestampOID:
		var ts pgtype.Timestamp
		if err := m.Scan(oid, pgtype.TextFormatCode, text, &ts); err != nil {
			return nil, err
		}
		return timeOrInfinity(ts.Time, ts.InfinityModifier), nil
	case pgtype.TimestamptzOID:
		var ts pgtype.Timestamptz
		if err := m.Scan(oid, pgtype.TextFormatCode, text, &ts); err != nil {
			return nil, err
		}
		return timeOrInfinity(ts.Time.UTC(), ts.InfinityModifier), nil
	case pgtype.JSONOID, pgtype.JSONBOID:
		var v any
		if err := json.Unmarshal(text, &v); err != nil {
			return nil, err
		}
		return v, nil
	}
	if elem, delim, ok := ArrayElement(m, oid); ok {
		items, err := ParseArray(text, delim)
		if err != nil {
			return nil, err
		}
		return decodeArray(m, elem, items)
	}
	return string(text), nil
}

func timeOrInfinity(t time.Time, inf pgtype.InfinityModifier) any {
	switch inf {
	case pgtype.Infinity:
		return "infinity"
	case pgtype.NegativeInfinity:
		return "-infinity"
	}
	return t
}

func decodeArray(m *pgtype.Map, elem uint32, items []ArrayElem) ([]any, error) {
	out := make([]any, len(items))
	for i, it := range items {
		var err error
		switch {
		case it.Sub:
			out[i], err = decodeArray(m, elem, it.Elems)
		case it.Null:
			out[i] = nil
		default:
			out[i], err = decodeValue(m, elem, it.Text)
		}
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ArrayElement reports whether oid is an array type m knows, and if so its
// element type and the delimiter between elements in its text form.
func ArrayElement(m *pgtype.Map, oid uint32) (elem uint32, delim byte, ok bool) {
	t, found := m.TypeForOID(oid)
	if !found {
		return 0, 0, false
	}
	ac, isArray := t.Codec.(*pgtype.ArrayCodec)
	if !isArray || ac.ElementType == nil {
		return 0, 0, false
	}
	delim = ac.Delimiter
	if delim == 0 {
		delim = ','
	}
	return ac.ElementType.OID, delim, true
}

// TrimPad returns text without trailing spaces: the value of a bpchar
// (character(n)) as PostgreSQL's cast to text returns it.
func TrimPad(text []byte) []byte {
	n := len(text)
	for n > 0 && text[n-1] == ' ' {
		n--
	}
	return text[:n]
}

// AppendBytea appends the bytes a bytea value in text format stands for:
// the hex form "\x0aff" (PostgreSQL's default bytea_output) or the escape
// form, where "\\" is a backslash and "\ooo" an octal byte.
func AppendBytea(dst, text []byte) ([]byte, error) {
	if len(text) >= 2 && text[0] == '\\' && text[1] == 'x' {
		hx := text[2:]
		if len(hx)%2 != 0 {
			return dst, errors.New("invalid bytea: odd number of hex digits")
		}
		start := len(dst)
		dst = append(dst, make([]byte, len(hx)/2)...)
		if _, err := hex.Decode(dst[start:], hx); err != nil {
			return dst[:start], fmt.Errorf("invalid bytea: %w", err)
		}
		return dst, nil
	}
	for i := 0; i < len(text); i++ {
		c := text[i]
		if c != '\\' {
			dst = append(dst, c)
			continue
		}
		switch {
		case i+1 < len(text) && text[i+1] == '\\':
			dst = append(dst, '\\')
			i++
		case i+3 < len(text) && isOctal(text[i+1]) && isOctal(text[i+2]) && isOctal(text[i+3]) && text[i+1] <= '3':
			dst = append(dst, (text[i+1]-'0')<<6|(text[i+2]-'0')<<3|(text[i+3]-'0'))
			i += 3
		default:
			return dst, errors.New("invalid bytea: bad escape sequence")
		}
	}
	return dst, nil
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// ArrayElem is one item of a parsed array literal: a nested array (Sub,
// with its items in Elems), SQL NULL (Null), or an element's text (Text).
// Text aliases the parsed input unless the element contained escapes.
type ArrayElem struct {
	Sub   bool
	Elems []ArrayElem
	Null  bool
	Text  []byte
}

// maxArrayDims is PostgreSQL's MAXDIM.
const maxArrayDims = 6

// ParseArray parses an array value in PostgreSQL's text format, such as
// {1,2,NULL}, {"a b","c\"d"}, {{1,2},{3,4}} or [0:1]={7,8}, and returns the
// items of its outer dimension. delim separates elements (',' for every
// built-in type except box, which uses ';'). An unquoted NULL (in any case)
// is SQL NULL; a quoted "NULL" is the text NULL. Explicit dimension bounds
// are skipped.
func ParseArray(text []byte, delim byte) ([]ArrayElem, error) {
	p := arrayParser{s: text, delim: delim}
	if len(text) > 0 && text[0] == '[' {
		// Dimension decoration, e.g. "[0:2]={...}": PostgreSQL writes it
		// only when a lower bound is not 1.
		for p.i < len(text) && text[p.i] != '=' {
			p.i++
		}
		p.i++
	}
	p.space()
	items, err := p.array(1)
	if err != nil {
		return nil, err
	}
	p.space()
	if p.i != len(p.s) {
		return nil, fmt.Errorf("invalid array: unexpected %q after the closing brace", p.s[p.i:])
	}
	return items, nil
}

type arrayParser struct {
	s     []byte
	i     int
	delim byte
}

func (p *arrayParser) space() {
	for p.i < len(p.s) && isArraySpace(p.s[p.i]) {
		p.i++
	}
}

func isArraySpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

func (p *arrayParser) errorf(format string, args ...any) error {
	return fmt.Errorf("invalid array at byte %d: %s", p.i, fmt.Sprintf(format, args...))
}

func (p *arrayParser) array(depth int) ([]ArrayElem, error) {
	if depth > maxArrayDims {
		return nil, p.errorf("more than %d dimensions", maxArrayDims)
	}
	if p.i >= len(p.s) || p.s[p.i] != '{' {
		return nil, p.errorf("expected '{'")
	}
	p.i++
	p.space()
	items := []ArrayElem{}
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		return items, nil
	}
	for {
		p.space()
		if p.i >= len(p.s) {
			return nil, p.errorf("unexpected end")
		}
		switch p.s[p.i] {
		case '{':
			sub, err := p.array(depth + 1)
			if err != nil {
				return nil, err
			}
			items = append(items, ArrayElem{Sub: true, Elems: sub})
		case '"':
			text, err := p.quoted()
			if err != nil {
				return nil, err
			}
			items = append(items, ArrayElem{Text: text})
		default:
			el, err := p.unquoted()
			if err != nil {
				return nil, err
			}
			items = append(items, el)
		}
		p.space()
		if p.i >= len(p.s) {
			return nil, p.errorf("unexpected end")
		}
		switch c := p.s[p.i]; c {
		case p.delim:
			p.i++
		case '}':
			p.i++
			return items, nil
		default:
			return nil, p.errorf("unexpected %q", c)
		}
	}
}

func (p *arrayParser) quoted() ([]byte, error) {
	p.i++ // opening quote
	start, escaped := p.i, false
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case '\\':
			escaped = true
			p.i += 2
			continue
		case '"':
			text := p.s[start:p.i]
			p.i++
			if escaped {
				text = unescapeArray(text)
			}
			return text, nil
		}
		p.i++
	}
	return nil, p.errorf("unterminated quoted element")
}

func (p *arrayParser) unquoted() (ArrayElem, error) {
	start, escaped := p.i, false
	for p.i < len(p.s) {
		c := p.s[p.i]
		if c == '\\' {
			escaped = true
			p.i += 2
			continue
		}
		if c == p.delim || c == '}' || c == '{' || c == '"' {
			break
		}
		p.i++
	}
	if p.i > len(p.s) {
		return ArrayElem{}, p.errorf("unexpected end after a backslash")
	}
	text := p.s[start:p.i]
	for len(text) > 0 && isArraySpace(text[len(text)-1]) {
		text = text[:len(text)-1]
	}
	if len(text) == 0 {
		return ArrayElem{}, p.errorf("empty element")
	}
	if !escaped && len(text) == 4 && (text[0]|0x20) == 'n' && (text[1]|0x20) == 'u' && (text[2]|0x20) == 'l' && (text[3]|0x20) == 'l' {
		return ArrayElem{Null: true}, nil
	}
	if escaped {
		text = unescapeArray(text)
	}
	return ArrayElem{Text: text}, nil
}

func unescapeArray(s []byte) []byte {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		out = append(out, s[i])
	}
	return out
}
