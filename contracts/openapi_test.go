package contracts

import (
	"os"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestOpenAPIIsYAML: the contract parses as YAML (the REST tests read it
// with a line scan, which does not notice a description that breaks the
// document for every generator), and its every operation has responses.
func TestOpenAPIIsYAML(t *testing.T) {
	raw, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                    `yaml:"openapi"`
		Paths   map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("openapi.yaml is not valid YAML: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") || len(doc.Paths) < 20 {
		t.Fatalf("openapi %q with %d paths, want an OpenAPI 3 document with its paths",
			doc.OpenAPI, len(doc.Paths))
	}
	for path, item := range doc.Paths {
		for method, v := range item {
			if method == "parameters" || method == "summary" || method == "description" {
				continue
			}
			op, ok := v.(map[string]any)
			if _, has := op["responses"]; !ok || !has {
				t.Errorf("%s %s has no responses", method, path)
			}
		}
	}
}
