package main

import "testing"

func TestBucketsRoundTrip(t *testing.T) {
	prev := -1
	for _, v := range []int64{0, 1, 63, 127, 128, 129, 1000, 12345, 1 << 20, 987654321, 1 << 46, 1 << 50} {
		i := bucketOf(v)
		if i < prev || i >= nBuckets {
			t.Fatalf("bucketOf(%d) = %d (prev %d, n %d)", v, i, prev, nBuckets)
		}
		prev = i
		got := valueOf(i)
		if v < 1<<46 {
			if d := float64(got-v) / float64(v+1); d > 0.01 || d < -0.01 {
				t.Fatalf("valueOf(bucketOf(%d)) = %d", v, got)
			}
		}
	}
}

func TestQuantiles(t *testing.T) {
	var h hist
	for v := int64(1); v <= 100000; v++ {
		h.record(v * 1000) // 1 us .. 100 ms
	}
	for _, c := range []struct {
		q    float64
		want int64
	}{{0.5, 50_000_000}, {0.99, 99_000_000}, {0.999, 99_900_000}, {1, 100_000_000}} {
		got := h.quantile(c.q)
		if d := float64(got-c.want) / float64(c.want); d > 0.01 || d < -0.01 {
			t.Errorf("quantile(%v) = %d, want ~%d", c.q, got, c.want)
		}
	}
	if h.quantile(1) != 100_000_000 || h.max != 100_000_000 {
		t.Errorf("max %d, q1 %d", h.max, h.quantile(1))
	}
}
