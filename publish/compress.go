package publish

import (
	"bytes"
	"sync"

	"github.com/pierrec/lz4/v4"
	"github.com/twmb/franz-go/pkg/kgo"
)

// lz4Compressor compresses record batches with LZ4 the way Kafka's own
// Java client does: 64 KB blocks and no checksum of the content (every
// batch has a CRC of its own). franz-go's default compressor writes 4 MB
// blocks, which do not fit in the CPU's caches, and checksums the content:
// it takes about 1.5 times as long for the same ratio (BenchmarkCompress).
type lz4Compressor struct{ writers sync.Pool }

// NewCompressor returns the compressor the Producer gives franz-go
// (kgo.WithCompressor): LZ4 with 64 KB blocks and no content checksum.
func NewCompressor() kgo.Compressor { return newLZ4Compressor() }

func newLZ4Compressor() *lz4Compressor {
	c := &lz4Compressor{}
	c.writers.New = func() any {
		w := lz4.NewWriter(nil)
		// Both options are valid, so Apply cannot fail.
		_ = w.Apply(lz4.BlockSizeOption(lz4.Block64Kb), lz4.ChecksumOption(false))
		return w
	}
	return c
}

// Compress implements kgo.Compressor.
func (c *lz4Compressor) Compress(dst *bytes.Buffer, src []byte, _ ...kgo.CompressFlag) ([]byte, kgo.CompressionCodecType) {
	w := c.writers.Get().(*lz4.Writer)
	defer c.writers.Put(w)
	w.Reset(dst)
	if _, err := w.Write(src); err != nil {
		return nil, kgo.CodecError
	}
	if err := w.Close(); err != nil {
		return nil, kgo.CodecError
	}
	return dst.Bytes(), kgo.CodecLz4
}
