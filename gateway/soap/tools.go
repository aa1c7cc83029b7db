//go:build tools

package soap

// The code generator for gen/, pinned in go.mod by this import; `make soap-gen`
// builds it from the module cache.
import _ "github.com/hooklift/gowsdl/cmd/gowsdl"
