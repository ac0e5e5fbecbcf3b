package publish

import (
	"bytes"
	"fmt"
	"io"
	"testing"

	"github.com/pierrec/lz4/v4"
	"github.com/twmb/franz-go/pkg/kgo"
)

// testBatch is about 130 KB of JSON documents, compressible like real ones:
// field names and some values repeat, most values do not.
func testBatch() []byte {
	var b bytes.Buffer
	for i := range 1000 {
		fmt.Fprintf(&b, `{"id":%d,"name":"customer %d","city":"Lisbon","amount":"%d.%02d","notes":"%x %x %x"}`,
			i, i*7919, i*31%100000, i%100, uint64(i)*0x9E3779B97F4A7C15, uint64(i+1)*0xC2B2AE3D27D4EB4F, uint64(i+2)*0x165667B19E3779F9)
	}
	return b.Bytes()
}

// TestLZ4CompressorRoundTrip decompresses what the compressor wrote with
// an independent LZ4 frame reader.
func TestLZ4CompressorRoundTrip(t *testing.T) {
	src := testBatch()
	out, codec := newLZ4Compressor().Compress(new(bytes.Buffer), src)
	if codec != kgo.CodecLz4 {
		t.Fatalf("codec = %v, want lz4", codec)
	}
	got, err := io.ReadAll(lz4.NewReader(bytes.NewReader(out)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, src) {
		t.Fatalf("round trip returned %d bytes that differ from the %d written", len(got), len(src))
	}
}

// BenchmarkCompress compresses a record batch with franz-go's default LZ4
// compressor and with the bridge's.
func BenchmarkCompress(b *testing.B) {
	src := testBatch()
	def, err := kgo.DefaultCompressor(kgo.Lz4Compression())
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		c    kgo.Compressor
	}{{"franz-go-lz4", def}, {"bridge-lz4", newLZ4Compressor()}} {
		b.Run(c.name, func(b *testing.B) {
			var dst bytes.Buffer
			var n int
			b.SetBytes(int64(len(src)))
			for b.Loop() {
				dst.Reset()
				out, _ := c.c.Compress(&dst, src)
				n = len(out)
			}
			b.ReportMetric(float64(n)/float64(len(src)), "ratio")
		})
	}
}
