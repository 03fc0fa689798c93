package api

import (
	"slices"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// pageSize checks a request's page_size: 0 takes the default.
func pageSize(n int32) (int, error) {
	switch {
	case n < 0 || n > MaxPageSize:
		return 0, invalid("page_size must be between 0 and %d", MaxPageSize)
	case n == 0:
		return DefaultPageSize, nil
	}
	return int(n), nil
}

// page reads the items of ids (sorted by cmp) that follow the page token, keeping
// those read returns ok for, until size are kept. The token is the id of the last item
// of the previous page, so ids need not still contain it (its record may be gone).
func page[T interface{ GetId() string }](ids []string, token string, cmp func(a, b string) int, size int, read func(id string) (T, bool)) ([]T, *latchkeyv1.PageInfo) {
	start := 0
	if token != "" {
		i, found := slices.BinarySearchFunc(ids, token, cmp)
		if found {
			i++
		}
		start = i
	}
	var out []T
	info := &latchkeyv1.PageInfo{}
	for _, id := range ids[start:] {
		item, ok := read(id)
		if !ok {
			continue
		}
		if len(out) == size {
			info.NextPageToken = out[len(out)-1].GetId()
			break
		}
		out = append(out, item)
	}
	return out, info
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func newestFirst(a, b string) int { return -compare(a, b) }
