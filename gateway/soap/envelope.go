package soap

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/text/encoding/charmap"

	"github.com/puntos-loyalty/puntos/core"
)

// Namespaces the gateway reads and writes.
const (
	nsSOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
	nsSOAP12 = "http://www.w3.org/2003/05/soap-envelope"
	nsPuntos = "urn:puntos:soap:v1"
	nsWSSE   = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
	nsWSU    = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
	nsXSI    = "http://www.w3.org/2001/XMLSchema-instance"
)

// Limits bounds what an envelope may hold. A request beyond any of them is
// refused with a Client.Invalid fault before any of it is acted upon.
type Limits struct {
	// Body is the largest request body in bytes.
	Body int
	// Depth is the deepest element nesting, the Envelope being depth 1.
	Depth int
	// Attrs is the most attributes (namespace declarations included) on one
	// element.
	Attrs int
	// Elements is the most elements in one envelope.
	Elements int
}

// DefaultLimits are the limits used when Options leaves them zero.
var DefaultLimits = Limits{Body: 256 << 10, Depth: 32, Attrs: 32, Elements: 10_000}

// version is a SOAP version: 11 or 12.
type version int

const (
	soap11 version = 11
	soap12 version = 12
)

// node is one element of a parsed envelope: its qualified name, attributes,
// the text directly inside it and its child elements.
type node struct {
	name     xml.Name
	attrs    []xml.Attr
	text     strings.Builder
	children []*node
}

func (n *node) attr(space, local string) (string, bool) {
	for _, a := range n.attrs {
		if a.Name.Local == local && (a.Name.Space == space || space == "") {
			return a.Value, true
		}
	}
	return "", false
}

// child returns the first child element with the given name.
func (n *node) child(space, local string) *node {
	for _, c := range n.children {
		if c.name.Local == local && c.name.Space == space {
			return c
		}
	}
	return nil
}

// envelope is a request envelope, checked against the limits.
type envelope struct {
	version version
	header  *node // nil when there is none
	op      *node // the one element in the Body
}

// invalid is a Client.Invalid error about the envelope.
func invalid(field, format string, args ...any) error {
	return core.Errorf(core.Invalid, field, format, args...)
}

// parseEnvelope reads body once as a stream of tokens, enforcing lim as it
// goes, and returns the envelope's parts. The decoder keeps track of the
// namespace prefixes declared on every element, the Envelope's included, so
// names come back fully qualified whatever prefixes the caller chose.
func parseEnvelope(body []byte, lim Limits) (*envelope, error) {
	dec := xml.NewDecoder(bytes.NewReader(body))
	dec.CharsetReader = charsetReader
	var root *node
	var stack []*node
	elements := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, invalid("Envelope", "is not well-formed XML: %v", trimXMLError(err))
		}
		switch t := tok.(type) {
		case xml.StartElement:
			elements++
			if elements > lim.Elements {
				return nil, invalid("Envelope", "has more than %d elements", lim.Elements)
			}
			if len(stack) >= lim.Depth {
				return nil, invalid(t.Name.Local, "is nested deeper than %d elements", lim.Depth)
			}
			if len(t.Attr) > lim.Attrs {
				return nil, invalid(t.Name.Local, "has more than %d attributes", lim.Attrs)
			}
			n := &node{name: t.Name, attrs: t.Attr}
			if len(stack) == 0 {
				if root != nil {
					return nil, invalid("Envelope", "has content after the Envelope")
				}
				root = n
			} else {
				parent := stack[len(stack)-1]
				parent.children = append(parent.children, n)
			}
			stack = append(stack, n)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) == 0 {
				if len(bytes.TrimSpace(t)) > 0 {
					return nil, invalid("Envelope", "has text outside the Envelope")
				}
				continue
			}
			stack[len(stack)-1].text.Write(t)
		case xml.Directive:
			return nil, invalid("Envelope", "must not carry a DOCTYPE or other directive")
		}
	}
	if root == nil {
		return nil, invalid("Envelope", "is missing: the body is not a SOAP envelope")
	}
	env := &envelope{}
	switch {
	case root.name.Local != "Envelope":
		return nil, invalid("Envelope", "is missing: the root element is %s", root.name.Local)
	case root.name.Space == nsSOAP11:
		env.version = soap11
	case root.name.Space == nsSOAP12:
		env.version = soap12
	default:
		return nil, invalid("Envelope", "has the unknown namespace %q: use SOAP 1.1 (%s) or "+
			"SOAP 1.2 (%s)", root.name.Space, nsSOAP11, nsSOAP12)
	}
	ns := root.name.Space
	var bodyNode *node
	for i, c := range root.children {
		switch {
		case c.name.Space == ns && c.name.Local == "Header" && i == 0:
			env.header = c
		case c.name.Space == ns && c.name.Local == "Body" && bodyNode == nil:
			bodyNode = c
		default:
			return nil, invalid(c.name.Local, "is not expected in the Envelope")
		}
	}
	if bodyNode == nil {
		return nil, invalid("Body", "is required")
	}
	if len(bodyNode.children) != 1 {
		return nil, invalid("Body", "must hold exactly one operation element, found %d",
			len(bodyNode.children))
	}
	env.op = bodyNode.children[0]
	return env, nil
}

// charsetReader reads envelopes declared in the single-byte charsets of
// legacy systems (<?xml version="1.0" encoding="ISO-8859-1"?>) as UTF-8.
// Any other declared charset is refused by name.
func charsetReader(label string, in io.Reader) (io.Reader, error) {
	switch strings.ToLower(strings.TrimSpace(label)) {
	case "iso-8859-1", "iso8859-1", "iso_8859-1", "latin1", "l1":
		return charmap.ISO8859_1.NewDecoder().Reader(in), nil
	case "windows-1252", "cp1252":
		return charmap.Windows1252.NewDecoder().Reader(in), nil
	case "us-ascii", "ascii":
		return in, nil // a subset of UTF-8; a byte above 127 fails as invalid UTF-8
	}
	return nil, fmt.Errorf("the envelope declares the charset %q: send UTF-8, ISO-8859-1 "+
		"or windows-1252", label)
}

// trimXMLError drops the package prefix of an encoding/xml error.
func trimXMLError(err error) string {
	return strings.TrimPrefix(err.Error(), "XML syntax error ")
}

// decodeOperation decodes the Body's element into v with a second streaming
// pass, so that prefixes declared on the Envelope or Body still resolve.
func decodeOperation(body []byte, v any) error {
	dec := xml.NewDecoder(bytes.NewReader(body))
	dec.CharsetReader = charsetReader
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("find operation: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			if depth == 3 {
				// Envelope > Body > operation: the Header is skipped whole.
				return dec.DecodeElement(v, &t)
			}
			if depth == 2 && t.Name.Local == "Header" {
				if err := dec.Skip(); err != nil {
					return fmt.Errorf("skip header: %w", err)
				}
				depth--
			}
		case xml.EndElement:
			depth--
		}
	}
}
