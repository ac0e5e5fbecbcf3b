package testenv

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestCompactedView(t *testing.T) {
	msgs := []Message{
		{Key: []byte("a"), Value: []byte("1")},
		{Key: []byte("b"), Value: []byte("1")},
		{Key: []byte("a"), Value: []byte("2")},
		{Key: []byte("b"), Tombstone: true},
		{Key: nil, Value: []byte("orphan")},
		{Key: []byte("c"), Tombstone: true}, // tombstone for a key never seen
		{Key: []byte(""), Value: []byte("empty key is a key")},
		{Key: []byte("d"), Tombstone: true},
		{Key: []byte("d"), Value: []byte("back")},
	}
	want := map[string][]byte{
		"a": []byte("2"),
		"":  []byte("empty key is a key"),
		"d": []byte("back"),
	}
	if diff := cmp.Diff(want, CompactedView(msgs)); diff != "" {
		t.Errorf("CompactedView (-want +got):\n%s", diff)
	}
	if n := NullKeys(msgs); n != 1 {
		t.Errorf("NullKeys = %d, want 1", n)
	}
}

func TestDiffViews(t *testing.T) {
	view := func(kv ...string) map[string][]byte {
		m := make(map[string][]byte)
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = []byte(kv[i+1])
		}
		return m
	}
	for _, tc := range []struct {
		name      string
		got, want map[string][]byte
		diff      string
	}{
		{
			name: "equal",
			got:  view("a", `{"x":1}`),
			want: view("a", `{"x":1}`),
		},
		{
			name: "both empty",
			got:  nil,
			want: map[string][]byte{},
		},
		{
			name: "missing, extra and different, sorted by key",
			got:  view("b", `{"x":1}`, "c", `{"x":2}`, "d", "same"),
			want: view("a", `{"x":0}`, "b", `{"x": 1}`, "d", "same"),
			diff: `compacted view differs in 3 of 4 keys (1 missing, 1 extra, 1 different; got 3 keys, want 3):
missing key "a": want "{\"x\":0}"
key "b":
	got  "{\"x\":1}"
	want "{\"x\": 1}"
extra key "c": got "{\"x\":2}"
`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.diff, DiffViews(tc.got, tc.want)); diff != "" {
				t.Errorf("DiffViews (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("bounded", func(t *testing.T) {
		want := make(map[string][]byte)
		for i := range 100 {
			want[fmt.Sprintf("k%03d", i)] = []byte(strings.Repeat("v", 1000))
		}
		d := DiffViews(nil, want)
		if n := strings.Count(d, "\n"); n != 22 {
			t.Errorf("diff of 100 missing keys has %d lines, want 22:\n%s", n, d)
		}
		if !strings.Contains(d, "... and 80 more") || !strings.Contains(d, "(1000 bytes)") || len(d) > 6000 {
			t.Errorf("diff not bounded:\n%s", d)
		}
		if !strings.Contains(d, `missing key "k000"`) || strings.Contains(d, `"k020"`) {
			t.Errorf("diff does not show the first keys in order:\n%s", d)
		}
	})
}

func TestEventually(t *testing.T) {
	ctx := context.Background()

	t.Run("done", func(t *testing.T) {
		calls := 0
		err := Eventually(ctx, 5*time.Second, func(context.Context) (bool, string, error) {
			calls++
			return calls == 3, fmt.Sprintf("call %d", calls), nil
		})
		if err != nil || calls != 3 {
			t.Errorf("Eventually = %v after %d calls, want nil after 3", err, calls)
		}
	})

	t.Run("timeout reports the last reason", func(t *testing.T) {
		calls := 0
		err := Eventually(ctx, 300*time.Millisecond, func(context.Context) (bool, string, error) {
			calls++
			return false, fmt.Sprintf("still waiting (call %d)", calls), nil
		})
		want := fmt.Sprintf("still waiting (call %d)", calls)
		if err == nil || !strings.HasSuffix(err.Error(), want) {
			t.Errorf("Eventually = %v, want an error ending in %q", err, want)
		}
	})

	t.Run("error stops at once", func(t *testing.T) {
		boom := errors.New("boom")
		calls := 0
		err := Eventually(ctx, 5*time.Second, func(context.Context) (bool, string, error) {
			calls++
			return false, "", boom
		})
		if !errors.Is(err, boom) || calls != 1 {
			t.Errorf("Eventually = %v after %d calls, want boom after 1", err, calls)
		}
	})

	t.Run("deadline error keeps the last reason", func(t *testing.T) {
		calls := 0
		err := Eventually(ctx, 300*time.Millisecond, func(ctx context.Context) (bool, string, error) {
			calls++
			if calls == 1 {
				return false, "first look", nil
			}
			<-ctx.Done()
			return false, "", ctx.Err()
		})
		if err == nil || !strings.HasSuffix(err.Error(), "first look") {
			t.Errorf("Eventually = %v, want an error ending in %q", err, "first look")
		}
	})
}
