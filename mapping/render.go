package mapping

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/statefeed/statefeed/cdc"
)

// Rendering rules, from a column's text format to JSON. Each column field
// gets its renderer once, from its type OID, when a mapping is bound to a
// relation; rendering a row then appends straight from the text bytes.
//
//	int2, int4, int8                     number, as PostgreSQL wrote it
//	float4, float8                       number; NaN, Infinity, -Infinity as strings
//	numeric                              string with the exact decimal text ("12.50"),
//	                                     NaN and Infinity included: JSON numbers lose precision
//	bool                                 true / false
//	text, varchar, name, "char"          string
//	bpchar (character(n))                string without trailing pad spaces
//	timestamptz                          string, RFC 3339 in UTC, fractional seconds only when
//	                                     non-zero: "2024-01-02T03:04:05.123456Z"
//	timestamp                            string, the same without a zone: "2024-01-02T03:04:05"
//	date                                 string "2024-01-02"
//	BC dates and timestamps              astronomical years: 1 BC is year 0000, 2 BC is -0001
//	infinite dates and timestamps        the strings "infinity" and "-infinity"
//	bytea                                string, standard padded base64 of the bytes
//	json, jsonb                          embedded JSON, compacted (insignificant space removed)
//	arrays                               JSON arrays, nested for multi-dimensional arrays, each
//	                                     element rendered by its type's rule; NULL elements null
//	uuid, enum, inet, cidr, macaddr,     string, in PostgreSQL's text form
//	money, time, timetz, interval, and
//	every other type
//	SQL NULL                             null
//
// Expression results are Go values and render with the same conventions:
// nil null, booleans, integers and floats as numbers (NaN and infinities as
// strings), strings, []byte base64, time.Time RFC 3339 in UTC, slices as
// arrays, maps as objects with sorted keys.
//
// The text is expected in the format a session with DateStyle ISO and
// bytea_output hex (or escape) produces, which is what the replication
// connection uses.

type kind uint8

const (
	kindString kind = iota
	kindBpchar
	kindInt
	kindFloat
	kindNumeric
	kindBool
	kindTimestamptz
	kindTimestamp
	kindDate
	kindBytea
	kindJSON
	kindArray
)

// colType is the renderer of one column type.
type colType struct {
	kind  kind
	elem  *colType // element type of an array
	delim byte     // element delimiter of an array
}

// typeMap resolves built-in array types to their element types. It is only
// read after package initialisation.
var typeMap = pgtype.NewMap()

var (
	stringType = &colType{kind: kindString}
	scalarType = map[uint32]*colType{
		pgtype.BPCharOID:      {kind: kindBpchar},
		pgtype.Int2OID:        {kind: kindInt},
		pgtype.Int4OID:        {kind: kindInt},
		pgtype.Int8OID:        {kind: kindInt},
		pgtype.Float4OID:      {kind: kindFloat},
		pgtype.Float8OID:      {kind: kindFloat},
		pgtype.NumericOID:     {kind: kindNumeric},
		pgtype.BoolOID:        {kind: kindBool},
		pgtype.TimestamptzOID: {kind: kindTimestamptz},
		pgtype.TimestampOID:   {kind: kindTimestamp},
		pgtype.DateOID:        {kind: kindDate},
		pgtype.ByteaOID:       {kind: kindBytea},
		pgtype.JSONOID:        {kind: kindJSON},
		pgtype.JSONBOID:       {kind: kindJSON},
	}
)

// typeFor returns the renderer for a column type. catalogType is the
// catalog's format_type text when known: it lets arrays of types pgx does
// not know (enums, domains) render as arrays of strings.
func typeFor(oid uint32, catalogType string) *colType {
	if t, ok := scalarType[oid]; ok {
		return t
	}
	if elem, delim, ok := cdc.ArrayElement(typeMap, oid); ok {
		return &colType{kind: kindArray, elem: typeFor(elem, ""), delim: delim}
	}
	if strings.HasSuffix(catalogType, "[]") {
		return &colType{kind: kindArray, elem: stringType, delim: ','}
	}
	return stringType
}

// scratch holds the reusable buffers of rendering. It is not safe for
// concurrent use.
type scratch struct {
	bytes []byte
	json  bytes.Buffer
}

// appendJSON appends the JSON rendering of a non-NULL value in text format.
func (t *colType) appendJSON(dst, text []byte, sc *scratch) ([]byte, error) {
	switch t.kind {
	case kindString:
		return appendJSONString(dst, text), nil
	case kindBpchar:
		return appendJSONString(dst, cdc.TrimPad(text)), nil
	case kindInt:
		if !isInteger(text) {
			return dst, errors.New("malformed integer text")
		}
		return append(dst, text...), nil
	case kindFloat:
		if isSpecialFloat(text) {
			return appendQuoted(dst, text), nil
		}
		if !isFloat(text) {
			return dst, errors.New("malformed floating-point text")
		}
		return append(dst, text...), nil
	case kindBool:
		return appendBool(dst, text)
	case kindJSON:
		if out, ok := appendCompactJSON(dst, text); ok {
			return out, nil
		}
		sc.json.Reset()
		if err := json.Compact(&sc.json, text); err != nil {
			return dst, fmt.Errorf("malformed json text: %w", err)
		}
		return append(dst, sc.json.Bytes()...), nil
	case kindArray:
		items, err := cdc.ParseArray(text, t.delim)
		if err != nil {
			return dst, err
		}
		return t.elem.appendArray(dst, items, sc)
	}
	// Every other kind renders as a string whose text needs no escaping.
	dst = append(dst, '"')
	dst, err := t.appendPlain(dst, text, sc)
	return append(dst, '"'), err
}

// appendKey appends the key rendering of a non-NULL value: the content of
// its JSON string unquoted, or its JSON literal when it is not a string.
func (t *colType) appendKey(dst, text []byte, sc *scratch) ([]byte, error) {
	switch t.kind {
	case kindString:
		return appendUTF8(dst, text), nil
	case kindBpchar:
		return appendUTF8(dst, cdc.TrimPad(text)), nil
	case kindFloat:
		if isSpecialFloat(text) {
			return append(dst, text...), nil
		}
		return t.appendJSON(dst, text, sc)
	case kindInt, kindBool, kindJSON, kindArray:
		return t.appendJSON(dst, text, sc)
	}
	return t.appendPlain(dst, text, sc)
}

// appendPlain appends the string content of kinds whose rendering is a
// string that never needs JSON escaping.
func (t *colType) appendPlain(dst, text []byte, sc *scratch) ([]byte, error) {
	switch t.kind {
	case kindNumeric:
		if !isSpecialFloat(text) && !isFloat(text) {
			return dst, errors.New("malformed numeric text")
		}
		return append(dst, text...), nil
	case kindTimestamptz, kindTimestamp, kindDate:
		return appendDateTime(dst, t.kind, text)
	case kindBytea:
		var err error
		sc.bytes, err = cdc.AppendBytea(sc.bytes[:0], text)
		if err != nil {
			return dst, err
		}
		return base64.StdEncoding.AppendEncode(dst, sc.bytes), nil
	}
	return dst, fmt.Errorf("internal error: kind %d has no plain rendering", t.kind)
}

func (t *colType) appendArray(dst []byte, items []cdc.ArrayElem, sc *scratch) ([]byte, error) {
	dst = append(dst, '[')
	for i, it := range items {
		if i > 0 {
			dst = append(dst, ',')
		}
		var err error
		switch {
		case it.Sub:
			dst, err = t.appendArray(dst, it.Elems, sc)
		case it.Null:
			dst = append(dst, "null"...)
		default:
			dst, err = t.appendJSON(dst, it.Text, sc)
		}
		if err != nil {
			return dst, err
		}
	}
	return append(dst, ']'), nil
}

func appendBool(dst, text []byte) ([]byte, error) {
	switch string(text) {
	case "t", "true":
		return append(dst, "true"...), nil
	case "f", "false":
		return append(dst, "false"...), nil
	}
	return dst, errors.New("malformed boolean text")
}

func appendQuoted(dst, text []byte) []byte {
	dst = append(dst, '"')
	dst = append(dst, text...)
	return append(dst, '"')
}

func isSpecialFloat(text []byte) bool {
	switch string(text) {
	case "NaN", "Infinity", "-Infinity":
		return true
	}
	return false
}

func isInteger(text []byte) bool {
	if len(text) > 0 && text[0] == '-' {
		text = text[1:]
	}
	if len(text) == 0 {
		return false
	}
	for _, c := range text {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// isFloat reports whether text is a JSON number (which PostgreSQL's float
// and numeric output always is, apart from the special values).
func isFloat(text []byte) bool {
	i := 0
	if i < len(text) && text[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(text) && text[i] >= '0' && text[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if digits() == 0 {
		return false
	}
	if i < len(text) && text[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(text) && (text[i] == 'e' || text[i] == 'E') {
		i++
		if i < len(text) && (text[i] == '+' || text[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(text)
}

const hexDigits = "0123456789abcdef"

// special8 marks, with the high bit of each byte, the bytes packed in x
// that need a second look in a JSON string: non-ASCII, control
// characters, quotes and backslashes. The lowest marked byte is always
// one of those; the marks above it may be false. (Bytes below 0x20 borrow
// into their high bit when 0x20 is subtracted; a byte equal to c becomes
// zero when xored with c and borrows when 1 is subtracted; a borrow only
// spreads upwards, from a byte that matched.)
func special8(x uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	ctl := (x - 0x20*ones) &^ x
	quote := x ^ '"'*ones
	quote = (quote - ones) &^ quote
	backslash := x ^ '\\'*ones
	backslash = (backslash - ones) &^ backslash
	return (x | ctl | quote | backslash) & highs
}

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes
// U+FFFD, so the output is always valid JSON.
func appendJSONString(dst, s []byte) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				// Most text is plain ASCII: skip it eight bytes at a
				// time, up to the first byte that needs a look.
				i++
				for len(s)-i >= 8 {
					m := special8(binary.LittleEndian.Uint64(s[i:]))
					if m != 0 {
						i += bits.TrailingZeros64(m) / 8
						break
					}
					i += 8
				}
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, "\ufffd"...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendDateTime renders date, timestamp and timestamptz text in ISO
// DateStyle ("2024-01-02 03:04:05.123456+05:30", " BC" suffix for BC).
func appendDateTime(dst []byte, k kind, text []byte) ([]byte, error) {
	switch string(text) {
	case "infinity", "-infinity":
		return append(dst, text...), nil
	}
	if out, ok := appendPlainDateTime(dst, k, text); ok {
		return out, nil
	}
	return appendParsedDateTime(dst, k, text)
}

// appendParsedDateTime renders any date, timestamp or timestamptz text in
// ISO DateStyle by way of a time.Time.
func appendParsedDateTime(dst []byte, k kind, text []byte) ([]byte, error) {
	t, err := parseDateTime(text, k)
	if err != nil {
		return dst, err
	}
	switch k {
	case kindDate:
		return t.AppendFormat(dst, "2006-01-02"), nil
	case kindTimestamp:
		return t.AppendFormat(dst, "2006-01-02T15:04:05.999999999"), nil
	}
	return t.AppendFormat(dst, "2006-01-02T15:04:05.999999999Z07:00"), nil
}

// appendPlainDateTime renders, without a time.Time, the text PostgreSQL
// writes in the common case: a four-digit year, no BC, no trailing zeros
// in the fraction and, for a timestamptz, the offset +00 (the replication
// session's time zone is UTC). Only the separators change:
// "2024-01-02 03:04:05.5+00" becomes "2024-01-02T03:04:05.5Z". It reports
// false for any other text, which appendParsedDateTime renders.
func appendPlainDateTime(dst []byte, k kind, text []byte) ([]byte, bool) {
	num := func(b []byte) (int, bool) {
		n := 0
		for _, c := range b {
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	const dateLen = len("2006-01-02")
	if len(text) < dateLen || text[4] != '-' || text[7] != '-' {
		return dst, false
	}
	year, okY := num(text[0:4])
	month, okM := num(text[5:7])
	day, okD := num(text[8:10])
	if !okY || !okM || !okD || month < 1 || month > 12 || day < 1 || day > daysIn(month, year) {
		return dst, false
	}
	if k == kindDate {
		if len(text) != dateLen {
			return dst, false
		}
		return append(dst, text...), true
	}
	const clockLen = len(" 15:04:05")
	clock := text[dateLen:]
	if len(clock) < clockLen || clock[0] != ' ' || clock[3] != ':' || clock[6] != ':' {
		return dst, false
	}
	hour, okH := num(clock[1:3])
	minute, okMin := num(clock[4:6])
	sec, okS := num(clock[7:9])
	if !okH || !okMin || !okS || hour > 23 || minute > 59 || sec > 59 {
		return dst, false
	}
	rest := clock[clockLen:]
	if len(rest) > 0 && rest[0] == '.' {
		n := 1
		for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
			n++
		}
		if n == 1 || n > 10 || rest[n-1] == '0' {
			return dst, false
		}
		rest = rest[n:]
	}
	switch {
	case k == kindTimestamp && len(rest) == 0:
	case k == kindTimestamptz && string(rest) == "+00":
	default:
		return dst, false
	}
	dst = append(dst, text[:dateLen]...)
	dst = append(dst, 'T')
	dst = append(dst, text[dateLen+1:len(text)-len(rest)]...)
	if k == kindTimestamptz {
		dst = append(dst, 'Z')
	}
	return dst, true
}

// daysIn returns the number of days of a month of the proleptic Gregorian
// calendar, as package time counts them.
func daysIn(month, year int) int {
	if month == 2 && year%4 == 0 && (year%100 != 0 || year%400 == 0) {
		return 29
	}
	return monthDays[month-1]
}

var monthDays = [12]int{31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}

var errDateTime = [...]error{
	kindDate:        errors.New("malformed date text; the source session must use DateStyle ISO"),
	kindTimestamp:   errors.New("malformed timestamp text; the source session must use DateStyle ISO"),
	kindTimestamptz: errors.New("malformed timestamptz text; the source session must use DateStyle ISO"),
}

// parseDateTime parses ISO-style date/time text into a UTC time.
func parseDateTime(text []byte, k kind) (time.Time, error) {
	bad := errDateTime[k]
	s := text
	bc := false
	if bytes.HasSuffix(s, []byte(" BC")) {
		bc, s = true, s[:len(s)-3]
	}
	i := 0
	num := func(min, max int) (int, bool) {
		n, start := 0, i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' && i-start < max {
			n = n*10 + int(s[i]-'0')
			i++
		}
		return n, i-start >= min
	}
	sep := func(c byte) bool {
		if i < len(s) && s[i] == c {
			i++
			return true
		}
		return false
	}
	year, ok1 := num(4, 9)
	ok := ok1 && sep('-')
	month, ok2 := num(2, 2)
	ok = ok && ok2 && sep('-')
	day, ok3 := num(2, 2)
	ok = ok && ok3
	if !ok {
		return time.Time{}, bad
	}
	if bc {
		year = 1 - year
	}
	var hour, minute, sec, nsec, offset int
	if k != kindDate {
		if !sep(' ') {
			return time.Time{}, bad
		}
		var okh, okm, oks bool
		hour, okh = num(2, 2)
		ok = okh && sep(':')
		minute, okm = num(2, 2)
		ok = ok && okm && sep(':')
		sec, oks = num(2, 2)
		if !ok || !oks {
			return time.Time{}, bad
		}
		if sep('.') {
			start := i
			frac, okf := num(1, 9)
			if !okf {
				return time.Time{}, bad
			}
			for n := i - start; n < 9; n++ {
				frac *= 10
			}
			nsec = frac
		}
		if k == kindTimestamptz {
			if i >= len(s) || (s[i] != '+' && s[i] != '-') {
				return time.Time{}, bad
			}
			sign := 1
			if s[i] == '-' {
				sign = -1
			}
			i++
			oh, okoh := num(2, 2)
			if !okoh {
				return time.Time{}, bad
			}
			offset = oh * 3600
			if sep(':') {
				om, ok := num(2, 2)
				if !ok {
					return time.Time{}, bad
				}
				offset += om * 60
				if sep(':') {
					os, ok := num(2, 2)
					if !ok {
						return time.Time{}, bad
					}
					offset += os
				}
			}
			offset *= sign
		}
	}
	if i != len(s) || month < 1 || month > 12 || day < 1 || day > 31 || hour > 24 || minute > 59 || sec > 60 {
		return time.Time{}, bad
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC)
	return t.Add(-time.Duration(offset) * time.Second), nil
}

// appendValue appends the JSON rendering of an expression result.
func appendValue(dst []byte, v any, sc *scratch) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(dst, "null"...), nil
	case bool:
		return strconv.AppendBool(dst, v), nil
	case string:
		return appendJSONString(dst, unsafeBytes(v)), nil
	case int:
		return strconv.AppendInt(dst, int64(v), 10), nil
	case int64:
		return strconv.AppendInt(dst, v, 10), nil
	case int32:
		return strconv.AppendInt(dst, int64(v), 10), nil
	case float64:
		return appendFloat(dst, v, 64), nil
	case float32:
		return appendFloat(dst, float64(v), 32), nil
	case []byte:
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, v)
		return append(dst, '"'), nil
	case time.Time:
		dst = append(dst, '"')
		dst = v.UTC().AppendFormat(dst, "2006-01-02T15:04:05.999999999Z07:00")
		return append(dst, '"'), nil
	case time.Duration:
		return appendJSONString(dst, unsafeBytes(v.String())), nil
	case []any:
		dst = append(dst, '[')
		for i, e := range v {
			if i > 0 {
				dst = append(dst, ',')
			}
			var err error
			if dst, err = appendValue(dst, e, sc); err != nil {
				return dst, err
			}
		}
		return append(dst, ']'), nil
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		dst = append(dst, '{')
		for i, k := range keys {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, unsafeBytes(k))
			dst = append(dst, ':')
			var err error
			if dst, err = appendValue(dst, v[k], sc); err != nil {
				return dst, err
			}
		}
		return append(dst, '}'), nil
	}
	return appendReflect(dst, reflect.ValueOf(v), sc)
}

// appendReflect renders the rarer result types: other integer, slice and
// map types.
func appendReflect(dst []byte, rv reflect.Value, sc *scratch) ([]byte, error) {
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.AppendInt(dst, rv.Int(), 10), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return strconv.AppendUint(dst, rv.Uint(), 10), nil
	case reflect.Float32, reflect.Float64:
		return appendFloat(dst, rv.Float(), rv.Type().Bits()), nil
	case reflect.String:
		return appendJSONString(dst, []byte(rv.String())), nil
	case reflect.Bool:
		return strconv.AppendBool(dst, rv.Bool()), nil
	case reflect.Pointer, reflect.Interface:
		if rv.IsNil() {
			return append(dst, "null"...), nil
		}
		return appendValue(dst, rv.Elem().Interface(), sc)
	case reflect.Slice, reflect.Array:
		if rv.Kind() == reflect.Slice && rv.IsNil() {
			return append(dst, "null"...), nil
		}
		dst = append(dst, '[')
		for i := range rv.Len() {
			if i > 0 {
				dst = append(dst, ',')
			}
			var err error
			if dst, err = appendValue(dst, rv.Index(i).Interface(), sc); err != nil {
				return dst, err
			}
		}
		return append(dst, ']'), nil
	case reflect.Map:
		if rv.Type().Key().Kind() != reflect.String {
			break
		}
		m := make(map[string]any, rv.Len())
		for it := rv.MapRange(); it.Next(); {
			m[it.Key().String()] = it.Value().Interface()
		}
		return appendValue(dst, m, sc)
	}
	return dst, fmt.Errorf("expression result of type %s cannot be rendered as JSON", rv.Type())
}

func appendFloat(dst []byte, f float64, bits int) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, `"NaN"`...)
	case math.IsInf(f, 1):
		return append(dst, `"Infinity"`...)
	case math.IsInf(f, -1):
		return append(dst, `"-Infinity"`...)
	}
	// Like encoding/json: plain notation for ordinary magnitudes.
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	return strconv.AppendFloat(dst, f, format, -1, bits)
}

// unsafeBytes returns the bytes of s without copying. Callers only read
// them.
func unsafeBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// appendUTF8 appends text with invalid UTF-8 replaced by U+FFFD, as string
// values are rendered, so that a key is always UTF-8 and equals the text of
// the same column in the document.
func appendUTF8(dst, text []byte) []byte {
	if utf8.Valid(text) {
		return append(dst, text...)
	}
	for len(text) > 0 {
		r, size := utf8.DecodeRune(text)
		if r == utf8.RuneError && size == 1 {
			dst = utf8.AppendRune(dst, utf8.RuneError)
		} else {
			dst = append(dst, text[:size]...)
		}
		text = text[size:]
	}
	return dst
}
