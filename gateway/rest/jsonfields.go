package rest

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"
)

var timeType = reflect.TypeFor[time.Time]()

// badTimeField names the field of body, as a path such as
// events[2].occurred_at, whose value a timestamp field of v could not
// read: a value that is not a string, or not an RFC 3339 instant. The JSON
// decoder's own error names no field. It returns "" when it finds none.
func badTimeField(body []byte, v any) string {
	names := map[string]bool{}
	timeFieldNames(reflect.TypeOf(v), names, 0)
	var doc any
	if len(names) == 0 || json.Unmarshal(body, &doc) != nil {
		return ""
	}
	return findBadTime(doc, "", names)
}

// timeFieldNames gathers the JSON names (lower case, as the decoder
// matches them) of the timestamp fields of t, at any depth.
func timeFieldNames(t reflect.Type, names map[string]bool, depth int) {
	if t == nil || depth > 8 {
		return
	}
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t == timeType {
		return
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" {
			timeFieldNames(f.Type, names, depth+1)
			continue
		}
		if name == "" {
			name = f.Name
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft == timeType {
			names[strings.ToLower(name)] = true
			continue
		}
		timeFieldNames(f.Type, names, depth+1)
	}
}

// findBadTime walks a decoded JSON document for the first field named in
// names whose value is neither null nor an RFC 3339 instant.
func findBadTime(v any, path string, names map[string]bool) string {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			p := k
			if path != "" {
				p = path + "." + k
			}
			if names[strings.ToLower(k)] {
				if x[k] == nil {
					continue
				}
				s, ok := x[k].(string)
				if !ok {
					return p
				}
				var t time.Time
				if t.UnmarshalJSON([]byte(fmt.Sprintf("%q", s))) != nil {
					return p
				}
				continue
			}
			if q := findBadTime(x[k], p, names); q != "" {
				return q
			}
		}
	case []any:
		for i, e := range x {
			if q := findBadTime(e, fmt.Sprintf("%s[%d]", path, i), names); q != "" {
				return q
			}
		}
	}
	return ""
}
