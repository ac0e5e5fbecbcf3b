package mapping

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/statefeed/statefeed/internal/golden"
)

// TestRenderColumns renders one value of every supported type as a JSON
// value and as a key, against testdata/render.golden.
func TestRenderColumns(t *testing.T) {
	tests := []struct {
		name    string
		oid     uint32
		catalog string // format_type, for arrays of unknown types
		text    string
	}{
		{"int2", pgtype.Int2OID, "", "-32768"},
		{"int4", pgtype.Int4OID, "", "42"},
		{"int8", pgtype.Int8OID, "", "9223372036854775807"},
		{"numeric", pgtype.NumericOID, "", "12.50"},
		{"numeric big", pgtype.NumericOID, "", "123456789012345678901234567890.000000001"},
		{"numeric NaN", pgtype.NumericOID, "", "NaN"},
		{"numeric Infinity", pgtype.NumericOID, "", "Infinity"},
		{"float4", pgtype.Float4OID, "", "1.5"},
		{"float8 exponent", pgtype.Float8OID, "", "1e-07"},
		{"float8 NaN", pgtype.Float8OID, "", "NaN"},
		{"float8 Infinity", pgtype.Float8OID, "", "Infinity"},
		{"float8 -Infinity", pgtype.Float8OID, "", "-Infinity"},
		{"bool true", pgtype.BoolOID, "", "t"},
		{"bool false", pgtype.BoolOID, "", "f"},
		{"text", pgtype.TextOID, "", "a \"quoted\" \\ line\nbreak\ttab\x01 é ✓"},
		{"text invalid utf8", pgtype.TextOID, "", "a\xffb"},
		{"varchar", pgtype.VarcharOID, "", "x "},
		{"name", pgtype.NameOID, "", "pg_class"},
		{"bpchar", pgtype.BPCharOID, "character(8)", "AB12    "},
		{"timestamptz utc", pgtype.TimestamptzOID, "", "2024-01-02 03:04:05.123456+00"},
		{"timestamptz offset", pgtype.TimestamptzOID, "", "2024-01-02 08:34:05+05:30"},
		{"timestamptz odd offset", pgtype.TimestamptzOID, "", "1900-01-01 00:00:00+00:09:21"},
		{"timestamptz whole second", pgtype.TimestamptzOID, "", "2024-01-02 03:04:05-01"},
		{"timestamptz infinity", pgtype.TimestamptzOID, "", "infinity"},
		{"timestamptz BC", pgtype.TimestamptzOID, "", "0044-03-15 12:00:00+00 BC"},
		{"timestamp", pgtype.TimestampOID, "", "2024-01-02 03:04:05"},
		{"timestamp fraction", pgtype.TimestampOID, "", "2024-01-02 03:04:05.5"},
		{"timestamp -infinity", pgtype.TimestampOID, "", "-infinity"},
		{"date", pgtype.DateOID, "", "2024-02-29"},
		{"date infinity", pgtype.DateOID, "", "infinity"},
		{"time", pgtype.TimeOID, "", "13:14:15.5"},
		{"timetz", pgtype.TimetzOID, "", "13:14:15+02"},
		{"interval", pgtype.IntervalOID, "", "1 year 2 mons 3 days 04:05:06"},
		{"bytea hex", pgtype.ByteaOID, "", `\x00ff10`},
		{"bytea empty", pgtype.ByteaOID, "", `\x`},
		{"bytea escape", pgtype.ByteaOID, "", `ab\\\001`},
		{"json", pgtype.JSONOID, "", "{\"b\": [1, 2.50, null],\n \"a\": \"x\"}"},
		{"jsonb", pgtype.JSONBOID, "", `{"a": "x", "b": [1, 2.50, null]}`},
		{"uuid", pgtype.UUIDOID, "", "0e9b1b0a-5f0c-4d1e-9c1a-1f2e3d4c5b6a"},
		{"inet", pgtype.InetOID, "", "192.168.0.1/24"},
		{"cidr", pgtype.CIDROID, "", "10.0.0.0/8"},
		{"macaddr", pgtype.MacaddrOID, "", "08:00:2b:01:02:03"},
		{"money", 790, "money", "$1,000.00"},
		{"enum", 16500, "mood", "happy"},
		{"int array", pgtype.Int4ArrayOID, "", "{1,NULL,-3}"},
		{"int array 2d", pgtype.Int8ArrayOID, "", "{{1,2},{3,4}}"},
		{"text array", pgtype.TextArrayOID, "", `{"a b","c\"d",NULL,"NULL",plain}`},
		{"numeric array", pgtype.NumericArrayOID, "", "{1.10,NaN}"},
		{"bool array", pgtype.BoolArrayOID, "", "{t,f}"},
		{"bpchar array", pgtype.BPCharArrayOID, "", `{"a  ",b}`},
		{"timestamptz array", pgtype.TimestamptzArrayOID, "", `{"2024-01-02 03:04:05+00",infinity}`},
		{"bytea array", pgtype.ByteaArrayOID, "", `{"\\x01ff"}`},
		{"jsonb array", pgtype.JSONBArrayOID, "", `{"{\"a\": 1}","[]"}`},
		{"empty array", pgtype.TextArrayOID, "", "{}"},
		{"bounded array", pgtype.Int4ArrayOID, "", "[0:1]={7,8}"},
		{"enum array", 16501, "mood[]", "{happy,sad}"},
		{"box array", pgtype.BoxArrayOID, "", "{(1,1),(0,0);(2,2),(1,1)}"},
	}
	var b strings.Builder
	sc := &scratch{}
	for _, tt := range tests {
		ct := typeFor(tt.oid, tt.catalog)
		j, err := ct.appendJSON(nil, []byte(tt.text), sc)
		if err != nil {
			t.Errorf("%s: appendJSON(%q): %v", tt.name, tt.text, err)
			continue
		}
		k, err := ct.appendKey(nil, []byte(tt.text), sc)
		if err != nil {
			t.Errorf("%s: appendKey(%q): %v", tt.name, tt.text, err)
			continue
		}
		fmt.Fprintf(&b, "%s\n  text  %q\n  json  %s\n  key   %q\n", tt.name, tt.text, j, k)
	}
	golden.Check(t, "testdata/render.golden", b.String())
}

func TestRenderErrors(t *testing.T) {
	tests := []struct {
		oid  uint32
		text string
		want string
	}{
		{pgtype.Int4OID, "12a", "malformed integer text"},
		{pgtype.Float8OID, "1.", "malformed floating-point text"},
		{pgtype.NumericOID, "abc", "malformed numeric text"},
		{pgtype.BoolOID, "yes", "malformed boolean text"},
		{pgtype.TimestamptzOID, "01/02/2024 03:04:05 UTC", "malformed timestamptz text; the source session must use DateStyle ISO"},
		{pgtype.DateOID, "2024-13-01", "malformed date text; the source session must use DateStyle ISO"},
		{pgtype.ByteaOID, `\xzz`, "invalid bytea: encoding/hex: invalid byte: U+007A 'z'"},
		{pgtype.JSONBOID, `{"a":}`, "malformed json text: invalid character '}' looking for beginning of value"},
		{pgtype.Int4ArrayOID, "{1,", "invalid array at byte 3: unexpected end"},
	}
	for _, tt := range tests {
		_, err := typeFor(tt.oid, "").appendJSON(nil, []byte(tt.text), &scratch{})
		if err == nil || err.Error() != tt.want {
			t.Errorf("appendJSON(%d, %q) error = %v, want %q", tt.oid, tt.text, err, tt.want)
		}
	}
}

func TestRenderExpressionValues(t *testing.T) {
	tests := []struct {
		v    any
		want string
	}{
		{nil, "null"},
		{true, "true"},
		{42, "42"},
		{int64(-7), "-7"},
		{uint8(7), "7"},
		{1.5, "1.5"},
		{1e21, "1e+21"},
		{123456789.0, "123456789"},
		{math.NaN(), `"NaN"`},
		{math.Inf(1), `"Infinity"`},
		{math.Inf(-1), `"-Infinity"`},
		{"a\"b", `"a\"b"`},
		{[]byte{0, 255}, `"AP8="`},
		{time.Date(2024, 1, 2, 4, 4, 5, 0, time.FixedZone("X", 3600)), `"2024-01-02T03:04:05Z"`},
		{time.Date(2024, 1, 2, 3, 4, 5, 120000000, time.UTC), `"2024-01-02T03:04:05.12Z"`},
		{90 * time.Second, `"1m30s"`},
		{[]any{1, "x", nil}, `[1,"x",null]`},
		{map[string]any{"b": 1, "a": []any{true}}, `{"a":[true],"b":1}`},
		{[]string{"x", "y"}, `["x","y"]`},
		{map[string]int{"z": 1, "y": 2}, `{"y":2,"z":1}`},
	}
	for _, tt := range tests {
		got, err := appendValue(nil, tt.v, &scratch{})
		if err != nil || string(got) != tt.want {
			t.Errorf("appendValue(%#v) = %s, %v; want %s", tt.v, got, err, tt.want)
		}
	}
}

// BenchmarkAppendJSONString renders text values as JSON strings: plain
// ASCII, as most columns hold, and text with escapes and multi-byte
// characters.
func BenchmarkAppendJSONString(b *testing.B) {
	for _, bb := range []struct {
		name string
		text string
	}{
		{"ascii-16", "customer 123456"},
		{"ascii-1k", strings.Repeat("0a4f6d4a7b8c9d0e 1f2a3b4c5d6e7f80", 32)},
		{"mixed-1k", strings.Repeat("caf\u00e9 \"quoted\"\tline\n\u2713 ", 40)},
		{"cyrillic-1k", strings.Repeat("\u041f\u0440\u0438\u0432\u0435\u0442 ", 80)},
	} {
		b.Run(bb.name, func(b *testing.B) {
			text := []byte(bb.text)
			buf := make([]byte, 0, 4*len(text))
			b.SetBytes(int64(len(text)))
			b.ReportAllocs()
			for b.Loop() {
				buf = appendJSONString(buf[:0], text)
			}
		})
	}
}

// TestSpecial8 checks the eight-byte test against the byte-wise rule: the
// lowest marked byte is the first that is not plain, for every byte value
// at every position, next to plain and special bytes.
func TestSpecial8(t *testing.T) {
	plain := func(c byte) bool { return c >= 0x20 && c < 0x80 && c != '"' && c != '\\' }
	for _, fill := range []byte{'a', ' ', '~', '"', '\\', 0x1f, 0x80, 0xff} {
		for pos := range 8 {
			for c := range 256 {
				word := bytes.Repeat([]byte{fill}, 8)
				word[pos] = byte(c)
				want := 8 // no special byte
				for i, b := range word {
					if !plain(b) {
						want = i
						break
					}
				}
				m := special8(binary.LittleEndian.Uint64(word))
				if got := bits.TrailingZeros64(m) / 8; got != want {
					t.Fatalf("special8(% x) = %016x: first marked byte %d, want %d", word, m, got, want)
				}
			}
		}
	}
}

// FuzzAppendJSONString checks that the rendering is valid JSON that
// decodes to the input, with each invalid UTF-8 byte as U+FFFD.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain ascii text", "a \"quoted\" \\ line\nbreak\ttab\x01 é ✓", "a\xffb", "12345678\x0012345678\"abcdefgh"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := appendJSONString(nil, []byte(s))
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("appendJSONString(%q) = %s, not a JSON string: %v", s, out, err)
		}
		var want strings.Builder
		for _, r := range s {
			want.WriteRune(r) // an invalid byte is utf8.RuneError
		}
		if got != want.String() {
			t.Fatalf("appendJSONString(%q) decodes to %q", s, got)
		}
	})
}

// TestPlainDateTime checks which texts take the path that only changes
// separators, and that it renders them as the general path does.
func TestPlainDateTime(t *testing.T) {
	tests := []struct {
		k     kind
		text  string
		plain bool
	}{
		{kindTimestamptz, "2024-01-02 03:04:05+00", true},
		{kindTimestamptz, "2024-01-02 03:04:05.123456+00", true},
		{kindTimestamptz, "2024-02-29 23:59:59.5+00", true},
		{kindTimestamptz, "2024-01-02 03:04:05+05:30", false},
		{kindTimestamptz, "2024-01-02 03:04:05.500+00", false}, // trailing zeros: the general path drops them
		{kindTimestamptz, "0044-03-15 12:00:00+00 BC", false},
		{kindTimestamptz, "12024-01-02 03:04:05+00", false},
		{kindTimestamptz, "2023-02-29 03:04:05+00", false}, // no such day: the general path normalises it
		{kindTimestamptz, "2024-01-02 24:00:00+00", false},
		{kindTimestamp, "2024-01-02 03:04:05", true},
		{kindTimestamp, "2024-01-02 03:04:05.000001", true},
		{kindTimestamp, "2024-01-02 03:04:05+00", false},
		{kindDate, "2024-02-29", true},
		{kindDate, "1900-02-29", false},
		{kindDate, "2000-02-29", true},
		{kindDate, "2024-13-01", false},
	}
	for _, tt := range tests {
		t.Run(tt.text, func(t *testing.T) {
			got, plain := appendPlainDateTime(nil, tt.k, []byte(tt.text))
			if plain != tt.plain {
				t.Fatalf("plain = %v, want %v", plain, tt.plain)
			}
			if !plain {
				return
			}
			want, err := appendParsedDateTime(nil, tt.k, []byte(tt.text))
			if err != nil || string(got) != string(want) {
				t.Errorf("plain path renders %q, the general one %q (%v)", got, want, err)
			}
		})
	}
}

// FuzzPlainDateTime checks that whatever the plain path renders, the
// general path renders the same.
func FuzzPlainDateTime(f *testing.F) {
	for _, s := range []string{"2024-01-02 03:04:05+00", "2024-01-02 03:04:05.123456+00", "2024-01-02 03:04:05", "2024-02-29", "0001-01-01 00:00:00+00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, k := range []kind{kindDate, kindTimestamp, kindTimestamptz} {
			got, plain := appendPlainDateTime(nil, k, []byte(s))
			if !plain {
				continue
			}
			want, err := appendParsedDateTime(nil, k, []byte(s))
			if err != nil || string(got) != string(want) {
				t.Fatalf("kind %d, %q: plain path renders %q, the general one %q (%v)", k, s, got, want, err)
			}
		}
	})
}
