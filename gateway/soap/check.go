package soap

import (
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/hooklift/gowsdl/soap"
)

var dateTimeType = reflect.TypeFor[soap.XSDDateTime]()

// checkElement holds an operation element to the generated type v points
// to: no element it does not know, none twice unless repeatable, every
// required one present, and every value of its type. Errors name the element,
// so the caller learns which field is wrong rather than that decoding failed.
// (encoding/xml alone ignores unknown elements and gowsdl's date type drops
// what it cannot parse.)
func checkElement(n *node, v any) error {
	return checkStruct(n, reflect.TypeOf(v).Elem())
}

func checkStruct(n *node, t reflect.Type) error {
	seen := map[string]int{}
	for _, c := range n.children {
		f, ok := fieldOf(t, c.name.Local)
		if !ok || c.name.Space != nsPuntos {
			return invalid(c.name.Local, "is not a known element of %s (namespace %s)",
				n.name.Local, nsPuntos)
		}
		if err := checkAttrs(c); err != nil {
			return err
		}
		seen[c.name.Local]++
		ft := f.Type
		if ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		} else if seen[c.name.Local] > 1 {
			return invalid(c.name.Local, "appears more than once")
		}
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
			if isNil, _ := c.attr(nsXSI, "nil"); isNil == "true" || isNil == "1" {
				if strings.TrimSpace(c.text.String()) != "" || len(c.children) > 0 {
					return invalid(c.name.Local, "is nil and must then be empty")
				}
				continue
			}
		}
		if err := checkValue(c, ft); err != nil {
			return err
		}
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := tagName(f)
		if name == "" || f.Type.Kind() == reflect.Pointer || f.Type.Kind() == reflect.Slice {
			continue
		}
		if seen[name] == 0 {
			return invalid(name, "is required in %s", n.name.Local)
		}
	}
	return nil
}

// checkAttrs refuses an attribute Puntos does not read on an element of an
// operation: <Amount currency="EUR">1</Amount> was read as one unit of the
// program's money without a word. Namespace declarations and the XML
// Schema instance attributes (xsi:nil, xsi:type) are read or harmless.
func checkAttrs(c *node) error {
	for _, a := range c.attrs {
		switch {
		case a.Name.Space == "xmlns", a.Name.Space == "" && a.Name.Local == "xmlns",
			a.Name.Space == nsXSI, a.Name.Space == "http://www.w3.org/XML/1998/namespace":
			continue
		}
		return invalid(c.name.Local, "has the attribute %s, which is not part of the "+
			"operation (%s); send what it says as an element, or leave it out", a.Name.Local,
			nsPuntos)
	}
	return nil
}

// checkValue checks one element against its Go type.
func checkValue(c *node, t reflect.Type) error {
	if t.Kind() == reflect.Struct && t != dateTimeType {
		return checkStruct(c, t)
	}
	if len(c.children) > 0 {
		return invalid(c.name.Local, "must hold a value, not elements")
	}
	text := strings.TrimSpace(c.text.String())
	switch {
	case t == dateTimeType:
		at, err := time.Parse(time.RFC3339Nano, text)
		if err != nil || at.Year() < 1900 {
			return invalid(c.name.Local, "must be a date and time with an offset, such as "+
				"2026-03-01T10:00:00-03:00")
		}
	case t.Kind() == reflect.Int64 || t.Kind() == reflect.Int32:
		if _, err := strconv.ParseInt(text, 10, t.Bits()); err != nil {
			return invalid(c.name.Local, "must be a whole number")
		}
	case t.Kind() == reflect.Bool:
		switch text {
		case "true", "false", "1", "0":
		default:
			return invalid(c.name.Local, "must be true or false")
		}
	}
	return nil
}

// fieldOf finds the field of t that holds element local.
func fieldOf(t reflect.Type, local string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		if f := t.Field(i); tagName(f) == local {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// tagName is the element name of a generated field; empty for XMLName.
func tagName(f reflect.StructField) string {
	if f.Name == "XMLName" {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("xml"), ",")
	if i := strings.LastIndexByte(name, ' '); i >= 0 {
		name = name[i+1:]
	}
	return name
}
