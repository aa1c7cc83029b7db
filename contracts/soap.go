// Package contracts carries the contract documents that Puntos serves itself,
// so that what a caller downloads is byte for byte what is checked in.
package contracts

import _ "embed"

// WSDL is contracts/puntos.wsdl, the SOAP face's service description.
//
//go:embed puntos.wsdl
var WSDL []byte

// XSD is contracts/puntos.xsd, the schema of the SOAP messages; the WSDL
// imports it as "puntos.xsd".
//
//go:embed puntos.xsd
var XSD []byte

// TelcoRules is contracts/examples/telco-rules.json: the conversion rules and
// tiers that `puntos demo` defines for its telecom program.
//
//go:embed examples/telco-rules.json
var TelcoRules []byte
