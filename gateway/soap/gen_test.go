package soap

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedIsFresh regenerates gen/ from contracts/puntos.wsdl into a
// temporary directory and fails when the checked-in file differs: run
// `make soap-gen` after changing the WSDL or the XSD.
func TestGeneratedIsFresh(t *testing.T) {
	dir := t.TempDir()
	out, err := exec.Command("bash", "gen.sh", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("gen.sh: %v\n%s", err, out)
	}
	fresh, err := os.ReadFile(filepath.Join(dir, "puntos.go"))
	if err != nil {
		t.Fatal(err)
	}
	checked, err := os.ReadFile(filepath.Join("gen", "puntos.go"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fresh, checked) {
		t.Fatalf("gateway/soap/gen/puntos.go is stale: run `make soap-gen`")
	}
	// The omitempty gowsdl writes must be gone, or a balance of 0 vanishes.
	if bytes.Contains(checked, []byte("omitempty")) {
		t.Fatalf("gen/puntos.go still has omitempty tags")
	}
}
