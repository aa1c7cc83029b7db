package soap_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestNodeSoapInterop proves the service with a client nobody here wrote:
// node-soap builds its client from the WSDL we serve and calls every
// operation in SOAP 1.1 and 1.2, authenticating with PasswordDigest. The
// figures it prints are checked exactly, and every answer it received is
// validated against contracts/puntos.xsd.
func TestNodeSoapInterop(t *testing.T) {
	node := requireTool(t, "node", "nodejs")
	if _, err := os.Stat("interop/node_modules/soap"); err != nil {
		npm := requireTool(t, "npm", "npm")
		cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund")
		cmd.Dir = "interop"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci in gateway/soap/interop: %v\n%s", err, out)
		}
	}
	p := startPlatform(t)
	want := strings.Join([]string{
		"enroll.status active",
		"accrue.points 29",
		"accrue.replayed true",
		"member.available 129",
		"redeem.available 79",
		"cancel.available 129",
		"transfer.available 99",
		"balance.available 99",
		"balance.lots 99@2028-11-01T03:00:00.000Z",
		"balance.next_expiry 99",
		"balance_b.available 30",
		"movements.page transfer_out,reversal",
		"movements.rest redemption,accrual,accrual",
		"fault Client.InsufficientPoints Points",
	}, "\n") + "\n"
	for _, ver := range []string{"11", "12"} {
		t.Run("SOAP"+ver, func(t *testing.T) {
			out := t.TempDir()
			cmd := exec.Command(node, "call.js", p.base, ver, "N"+ver, out)
			cmd.Dir = "interop"
			cmd.Env = append(os.Environ(), "SOAP_USER=billing", "SOAP_PASSWORD="+billingPass)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			got, err := cmd.Output()
			if err != nil {
				t.Fatalf("node call.js: %v\n%s\n%s", err, got, stderr.String())
			}
			if string(got) != want {
				t.Fatalf("node-soap saw:\n%s\nwant:\n%s", got, want)
			}
			files, _ := filepath.Glob(filepath.Join(out, "*.xml"))
			if len(files) != 14 {
				t.Fatalf("%d answers kept, want 14", len(files))
			}
			for _, f := range files {
				body, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				validate(t, filepath.Base(f), string(body))
			}
		})
	}
}
