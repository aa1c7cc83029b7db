package soap

import (
	"bytes"
	"encoding/xml"
	"errors"
	"net/http"
	"strings"

	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
	"github.com/puntos-loyalty/puntos/gateway/soap/gen"
)

// faultCodes is the one table from error kind to fault code. In SOAP 1.1 the
// code is the faultcode (prefixed with the envelope's namespace); in SOAP 1.2
// the part after the dot is the Subcode under env:Sender or env:Receiver.
// Both versions carry the whole code in the PuntosFault detail.
var faultCodes = map[core.ErrorKind]string{
	core.Invalid:      "Client.Invalid",
	core.NotFound:     "Client.NotFound",
	core.Conflict:     "Client.Conflict",
	core.Insufficient: "Client.InsufficientPoints",
	core.Unauthorized: "Client.Unauthorized",
	core.Forbidden:    "Client.Forbidden",
	core.Unavailable:  "Server.Unavailable",
	core.Internal:     "Server.Internal",
}

// fieldNames maps the ledger's field names to the request elements they come
// from; other snake_case names become CamelCase.
var fieldNames = map[string]string{
	"txn_id":          "TxnId",
	"member":          "CustomerRef",
	"to":              "ToCustomerRef",
	"posting_id":      "RedemptionTxnId",
	"original_txn_id": "RedemptionTxnId",
	"type":            "EventType",
}

func elementName(field string) string {
	if n, ok := fieldNames[field]; ok {
		return n
	}
	var b strings.Builder
	for _, part := range strings.Split(field, "_") {
		if part != "" {
			b.WriteString(strings.ToUpper(part[:1]) + part[1:])
		}
	}
	return b.String()
}

// Envelopes as written. The prefixes are spelled out in the tags so that the
// answer reads like every other SOAP service's.
type envelopeOut struct {
	XMLName xml.Name `xml:"soap:Envelope"`
	NS      string   `xml:"xmlns:soap,attr"`
	Body    bodyOut  `xml:"soap:Body"`
}

type bodyOut struct {
	Content any
}

type fault11 struct {
	XMLName xml.Name `xml:"soap:Fault"`
	Code    string   `xml:"faultcode"`
	String  string   `xml:"faultstring"`
	Detail  detail   `xml:"detail"`
}

type detail struct {
	Fault *gen.PuntosFault
}

type fault12 struct {
	XMLName xml.Name `xml:"soap:Fault"`
	NS      string   `xml:"xmlns:pt,attr"`
	Code    code12   `xml:"soap:Code"`
	Reason  reason12 `xml:"soap:Reason"`
	Detail  detail   `xml:"soap:Detail"`
}

type code12 struct {
	Value   string    `xml:"soap:Value"`
	Subcode subcode12 `xml:"soap:Subcode"`
}

type subcode12 struct {
	Value string `xml:"soap:Value"`
}

type reason12 struct {
	Text reasonText `xml:"soap:Text"`
}

type reasonText struct {
	Lang string `xml:"xml:lang,attr"`
	Text string `xml:",chardata"`
}

// answer writes content as the body of an envelope of version ver.
func (s *Server) answer(w http.ResponseWriter, ver version, status int, content any) {
	env := envelopeOut{NS: nsSOAP11, Body: bodyOut{Content: content}}
	ctype := "text/xml; charset=utf-8"
	if ver == soap12 {
		env.NS = nsSOAP12
		ctype = "application/soap+xml; charset=utf-8"
	}
	var buf bytes.Buffer
	buf.WriteString(xml.Header)
	enc := xml.NewEncoder(&buf)
	enc.Indent("", "  ")
	if err := enc.Encode(env); err != nil {
		s.log.Error("Encode SOAP answer", "error", err)
		http.Error(w, "the answer could not be encoded", http.StatusInternalServerError)
		return
	}
	buf.WriteByte('\n')
	w.Header().Set("Content-Type", ctype)
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// fault answers with the fault for err. Client mistakes are logged at Warn,
// our own faults at Error. A SOAP 1.1 fault goes with HTTP 500; a SOAP 1.2
// one with 400 for the caller's mistakes and 500 for ours.
func (s *Server) fault(w http.ResponseWriter, r *http.Request, ver version, txn string,
	err error) {
	if _, ok := core.AsError(err); !ok && postgres.Unreachable(err) {
		// The database is down or the connection broke: a state to wait out.
		s.log.Error("Database not reachable", "path", r.URL.Path, "txn_id", txn, "error", err)
		err = core.Errorf(core.Unavailable, "", "the ledger's database is not reachable now; "+
			"send the request again shortly (a write with the same TxnId)")
	}
	kind := core.KindOf(err)
	d := &gen.PuntosFault{Code: faultCodes[kind], Kind: string(kind)}
	field := ""
	if de, ok := core.AsError(err); ok {
		d.Message = de.Message
		if de.Field != "" {
			field = elementName(de.Field)
			d.Field = &field
			d.Message = field + ": " + de.Message
		}
	} else {
		d.Message = "the request could not be completed; it may be sent again with the " +
			"same TxnId"
	}
	if txn != "" {
		d.TxnId = &txn
	}
	if strings.HasPrefix(d.Code, "Server.") && !errors.Is(err, errPending) {
		s.log.Error("SOAP call failed", "path", r.URL.Path, "txn_id", txn, "error", err)
	} else {
		s.log.Warn("SOAP call refused", "kind", kind, "field", field, "detail", d.Message,
			"txn_id", txn)
	}
	if ver == soap12 {
		side, status := "soap:Sender", http.StatusBadRequest
		if strings.HasPrefix(d.Code, "Server.") {
			side, status = "soap:Receiver", http.StatusInternalServerError
		}
		_, sub, _ := strings.Cut(d.Code, ".")
		s.answer(w, ver, status, fault12{NS: nsPuntos,
			Code:   code12{Value: side, Subcode: subcode12{Value: "pt:" + sub}},
			Reason: reason12{Text: reasonText{Lang: "en", Text: d.Message}},
			Detail: detail{Fault: d}})
		return
	}
	s.answer(w, ver, http.StatusInternalServerError, fault11{Code: "soap:" + d.Code,
		String: d.Message, Detail: detail{Fault: d}})
}
