package cdc

import (
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgtype"
)

func TestDecodeValue(t *testing.T) {
	m := pgtype.NewMap()
	ts := time.Date(2024, 1, 2, 3, 4, 5, 123456000, time.UTC)
	tests := []struct {
		name string
		oid  uint32
		text string
		want any
	}{
		{"int2", pgtype.Int2OID, "-7", int64(-7)},
		{"int4", pgtype.Int4OID, "2147483647", int64(2147483647)},
		{"int8", pgtype.Int8OID, "-9223372036854775808", int64(math.MinInt64)},
		{"float4", pgtype.Float4OID, "1.5", 1.5},
		{"float8 exp", pgtype.Float8OID, "1e+100", 1e100},
		{"float8 inf", pgtype.Float8OID, "-Infinity", math.Inf(-1)},
		{"numeric", pgtype.NumericOID, "12.50", 12.5},
		{"numeric inf", pgtype.NumericOID, "Infinity", math.Inf(1)},
		{"bool t", pgtype.BoolOID, "t", true},
		{"bool f", pgtype.BoolOID, "f", false},
		{"text", pgtype.TextOID, "héllo", "héllo"},
		{"varchar", pgtype.VarcharOID, "x y ", "x y "},
		{"name", pgtype.NameOID, "pg_class", "pg_class"},
		{"bpchar", pgtype.BPCharOID, "ab  ", "ab"},
		{"bpchar blank", pgtype.BPCharOID, "    ", ""},
		{"bytea hex", pgtype.ByteaOID, `\x00ff41`, []byte{0, 0xff, 'A'}},
		{"bytea escape", pgtype.ByteaOID, `a\\b\001`, []byte{'a', '\\', 'b', 1}},
		{"uuid", pgtype.UUIDOID, "0e9b1b0a-5f0c-4d1e-9c1a-1f2e3d4c5b6a", "0e9b1b0a-5f0c-4d1e-9c1a-1f2e3d4c5b6a"},
		{"date", pgtype.DateOID, "2024-01-02", time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC)},
		{"date infinity", pgtype.DateOID, "infinity", "infinity"},
		{"timestamp", pgtype.TimestampOID, "2024-01-02 03:04:05.123456", ts},
		{"timestamp -infinity", pgtype.TimestampOID, "-infinity", "-infinity"},
		{"timestamptz", pgtype.TimestamptzOID, "2024-01-02 04:04:05.123456+01", ts},
		{"timestamptz half hour", pgtype.TimestamptzOID, "2024-01-02 08:34:05.123456+05:30", ts},
		{"time", pgtype.TimeOID, "03:04:05", "03:04:05"},
		{"interval", pgtype.IntervalOID, "1 day 02:00:00", "1 day 02:00:00"},
		{"json", pgtype.JSONOID, `{"a": [1, "x", null, true]}`, map[string]any{"a": []any{1.0, "x", nil, true}}},
		{"jsonb scalar", pgtype.JSONBOID, `"s"`, "s"},
		{"int array", pgtype.Int4ArrayOID, "{1,NULL,3}", []any{int64(1), nil, int64(3)}},
		{"text array quoted", pgtype.TextArrayOID, `{"a b","c\"d",NULL,"NULL"}`, []any{"a b", `c"d`, nil, "NULL"}},
		{"2d array", pgtype.Int8ArrayOID, "{{1,2},{3,4}}", []any{[]any{int64(1), int64(2)}, []any{int64(3), int64(4)}}},
		{"bounded array", pgtype.Int4ArrayOID, "[0:1]={7,8}", []any{int64(7), int64(8)}},
		{"empty array", pgtype.TextArrayOID, "{}", []any{}},
		{"inet", pgtype.InetOID, "10.0.0.1/8", "10.0.0.1/8"},
		{"cidr", pgtype.CIDROID, "10.0.0.0/8", "10.0.0.0/8"},
		{"enum (unknown oid)", 99999, "happy", "happy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeValue(m, tt.oid, []byte(tt.text))
			if err != nil {
				t.Fatalf("DecodeValue(%d, %q): %v", tt.oid, tt.text, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("DecodeValue(%d, %q) (-want +got):\n%s", tt.oid, tt.text, diff)
			}
		})
	}
}

func TestDecodeValueNaN(t *testing.T) {
	m := pgtype.NewMap()
	for _, oid := range []uint32{pgtype.Float8OID, pgtype.NumericOID} {
		v, err := DecodeValue(m, oid, []byte("NaN"))
		if f, ok := v.(float64); err != nil || !ok || !math.IsNaN(f) {
			t.Errorf("DecodeValue(%d, NaN) = %v, %v; want NaN", oid, v, err)
		}
	}
}

func TestDecodeValueErrors(t *testing.T) {
	m := pgtype.NewMap()
	tests := []struct {
		oid  uint32
		text string
		want string
	}{
		{pgtype.Int4OID, "x", `decode int4 value: strconv.ParseInt: parsing "x": invalid syntax`},
		{pgtype.BoolOID, "yes", `decode bool value: invalid boolean "yes"`},
		{pgtype.ByteaOID, `\x0`, "decode bytea value: invalid bytea: odd number of hex digits"},
		{pgtype.Int4ArrayOID, "{1,2", "decode _int4 value: invalid array at byte 4: unexpected end"},
	}
	for _, tt := range tests {
		_, err := DecodeValue(m, tt.oid, []byte(tt.text))
		if err == nil || err.Error() != tt.want {
			t.Errorf("DecodeValue(%d, %q) error = %v, want %q", tt.oid, tt.text, err, tt.want)
		}
	}
}

func TestParseArray(t *testing.T) {
	txt := func(s string) ArrayElem { return ArrayElem{Text: []byte(s)} }
	null := ArrayElem{Null: true}
	sub := func(e ...ArrayElem) ArrayElem { return ArrayElem{Sub: true, Elems: e} }
	tests := []struct {
		in    string
		delim byte
		want  []ArrayElem
		err   string
	}{
		{in: "{}", want: []ArrayElem{}},
		{in: "{a,b}", want: []ArrayElem{txt("a"), txt("b")}},
		{in: `{"a,b","\\",""}`, want: []ArrayElem{txt("a,b"), txt(`\`), txt("")}},
		{in: "{NULL,null,\"NULL\"}", want: []ArrayElem{null, null, txt("NULL")}},
		{in: "{ a , b }", want: []ArrayElem{txt("a"), txt("b")}},
		{in: "{{1,2},{3,NULL}}", want: []ArrayElem{sub(txt("1"), txt("2")), sub(txt("3"), null)}},
		{in: "{(0,0),(1,1);(2,2),(3,3)}", delim: ';', want: []ArrayElem{txt("(0,0),(1,1)"), txt("(2,2),(3,3)")}},
		{in: "[2:3]={x,y}", want: []ArrayElem{txt("x"), txt("y")}},
		{in: `{a\,b}`, want: []ArrayElem{txt("a,b")}},
		{in: "", err: "invalid array at byte 0: expected '{'"},
		{in: "{a,}", err: "invalid array at byte 3: empty element"},
		{in: "{a}x", err: `invalid array: unexpected "x" after the closing brace`},
		{in: `{"a}`, err: "invalid array at byte 4: unterminated quoted element"},
		{in: "{{{{{{{1}}}}}}}", err: "invalid array at byte 6: more than 6 dimensions"},
	}
	for _, tt := range tests {
		delim := tt.delim
		if delim == 0 {
			delim = ','
		}
		got, err := ParseArray([]byte(tt.in), delim)
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("ParseArray(%q) error = %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseArray(%q): %v", tt.in, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseArray(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func FuzzParseArray(f *testing.F) {
	for _, s := range []string{"{}", "{1,2}", `{"a\"b",NULL}`, "{{1},{2}}", "[0:1]={a,b}", `{a\,b}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		items, err := ParseArray(in, ',')
		if err != nil {
			return
		}
		var walk func([]ArrayElem, int)
		walk = func(es []ArrayElem, depth int) {
			if depth > maxArrayDims {
				t.Fatalf("ParseArray(%q) accepted %d dimensions", in, depth)
			}
			for _, e := range es {
				if e.Sub {
					walk(e.Elems, depth+1)
				}
			}
		}
		walk(items, 1)
	})
}
