package core

import (
	"fmt"
	"log/slog"
	"math/big"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Command kinds of conversions into other companies' programs.
const (
	// KindExternalUpsert creates or replaces the configuration of an
	// external program. The command's member field carries the external
	// program's code, so that all changes to one configuration apply in order.
	KindExternalUpsert = "external.upsert"
	// KindConvert asks to turn a member's points into an external program's
	// currency: the ledger holds the points and records the conversion for
	// the adapter that calls the other program.
	KindConvert = "points.convert"
	// KindConversionResolve is a person's settlement of a pending
	// conversion the other program never answered for sure: confirmed
	// (the points captured) or refused (the points given back).
	KindConversionResolve = "conversion.resolve"
)

// ResolveConversion is the payload of a conversion.resolve command.
type ResolveConversion struct {
	// ID is the conversion's.
	ID string `json:"id"`
	// Outcome is confirmed or refused.
	Outcome string `json:"outcome"`
	// Reference is the other program's reference of a confirmed credit.
	Reference string `json:"reference,omitempty"`
	// Reason says how the person knows.
	Reason string `json:"reason"`
}

// Check refuses a resolution that does not say what became of the
// conversion and how it is known.
func (r ResolveConversion) Check() error {
	switch r.Outcome {
	case ConversionConfirmed, ConversionRefused:
	default:
		return Errorf(Invalid, "outcome", "must be confirmed (the other program credited "+
			"the member) or refused (it never will)")
	}
	if r.Outcome == ConversionRefused && r.Reference != "" {
		return Errorf(Invalid, "reference", "is the other program's reference of a credit: "+
			"a refused conversion has none")
	}
	if len(r.Reference) > 200 {
		return Errorf(Invalid, "reference", "is longer than 200 characters")
	}
	if err := CheckLine("reference", r.Reference); err != nil {
		return err
	}
	return CheckReason(r.Reason, true)
}

// SourceConversion is the source of the ledger commands that conversions
// make on their own: the hold, its capture and its release.
const SourceConversion = "conversion"

// How members are identified at an external program.
const (
	IdentifyCustomerRef = "customer_ref" // our customer reference is their member id
	IdentifyAccountID   = "account_id"   // each request names the member's account there
)

// Flavours of the partner protocol.
const (
	FlavourHTTP = "http" // JSON over HTTPS, one call per conversion
	FlavourFile = "file" // a daily file of conversions out, files of answers back
)

// Conversion statuses.
const (
	ConversionPending   = "pending"   // held here; the other program has not answered for sure
	ConversionConfirmed = "confirmed" // credited there; our points captured
	ConversionRefused   = "refused"   // refused there; our points released
)

// ConversionHoldTTL is how long the hold of a conversion is authorized for:
// the ledger's longest. The conversion worker renews it while the
// conversion is pending, so it never lapses before the other side answers.
const ConversionHoldTTL = 90 * 24 * time.Hour

// ExternalProgram is another company's loyalty program that members can
// convert their points into, with the limits and the way to reach it.
type ExternalProgram struct {
	Code string `json:"code"`
	Name string `json:"name"`
	// Ratio is how many units of the other program one of our points is
	// worth, as a decimal string ("0.5" miles per point).
	Ratio    string   `json:"ratio"`
	Rounding Rounding `json:"rounding"`
	// MinPoints and MaxPoints bound one conversion, in our points.
	MinPoints Points `json:"min_points"`
	MaxPoints Points `json:"max_points"`
	// DailyLimit and MonthlyLimit bound what one member converts per local
	// day and month of the program's time zone; 0 means no limit.
	DailyLimit   Points `json:"daily_limit"`
	MonthlyLimit Points `json:"monthly_limit"`
	// Identify says how the member is known there: IdentifyCustomerRef or
	// IdentifyAccountID.
	Identify string `json:"identify"`
	// AccountPattern, when set, is a regular expression an account id must
	// match in full before any point is held.
	AccountPattern string `json:"account_pattern,omitempty"`
	Flavour        string `json:"flavour"`
	// Endpoint is the base URL of the partner's API (flavour http).
	Endpoint string `json:"endpoint,omitempty"`
	// Credentials is the secret sent to the partner as a bearer token. It is
	// stored encrypted, never logged and never answered back: reads show
	// Masked instead. What an upsert does with it is ExternalUpsert's.
	Credentials string `json:"credentials,omitempty"`
	Enabled     *bool  `json:"enabled,omitempty"`
}

// ExternalUpsert is the payload of a KindExternalUpsert command: an
// external program's configuration and what becomes of its stored
// credentials. Its own Credentials field hides the configuration's, so
// that a payload that leaves the field out can be told from one that gives
// it empty:
//
//   - left out (nil): the stored credentials are kept; a new external
//     program gets none;
//   - "": none; stored ones are removed;
//   - Masked: the stored credentials are kept; refused for an external
//     program not stored yet, which has none to keep;
//   - anything else: the new secret.
type ExternalUpsert struct {
	ExternalProgram
	Credentials *string `json:"credentials,omitempty"`
}

// Config is the configuration the upsert gives, with the credentials it
// names (empty when it leaves them out).
func (u *ExternalUpsert) Config() ExternalProgram {
	e := u.ExternalProgram
	e.Credentials = ""
	if u.Credentials != nil {
		e.Credentials = *u.Credentials
	}
	return e
}

// Masked is what reads and logs show instead of a secret. Given back as
// the credentials of an external program's upsert, it keeps the stored ones.
const Masked = "****"

// Defaults fills the fields a caller left empty.
func (e *ExternalProgram) Defaults() {
	if e.Rounding == "" {
		e.Rounding = RoundDown
	}
	if e.Identify == "" {
		e.Identify = IdentifyCustomerRef
	}
	if e.Flavour == "" {
		e.Flavour = FlavourHTTP
	}
	if e.MinPoints == 0 {
		e.MinPoints = 1
	}
	if e.MaxPoints == 0 {
		e.MaxPoints = MaxPoints
	}
	if e.Enabled == nil {
		yes := true
		e.Enabled = &yes
	}
}

// Normalize writes the ratio in the one form the ledger stores and
// answers, a decimal without trailing fraction zeros: "0.5" whether it was
// given as "0.50" or read back from the database as "0.500000". Writes and
// reads both call it, so the two show the same text for the same ratio. A
// ratio that does not parse is left as it is, for Validate to name.
func (e *ExternalProgram) Normalize() {
	if r, err := ParseRate("ratio", e.Ratio); err == nil {
		e.Ratio = FormatDecimal(r)
	}
}

// Validate checks an external program's configuration and names the first
// bad field. Errors: invalid.
func (e *ExternalProgram) Validate() error {
	if !codeOK(e.Code) {
		return Errorf(Invalid, "code", "must be 1-64 letters, digits, '-' or '_'")
	}
	if e.Name == "" || len(e.Name) > 200 {
		return Errorf(Invalid, "name", "is required, at most 200 characters")
	}
	if err := checkName(e.Name, true); err != nil {
		return err
	}
	ratio, err := ParseRate("ratio", e.Ratio)
	if err != nil {
		return err
	}
	if ratio.Sign() == 0 || ratio.Cmp(big.NewRat(1_000_000, 1)) > 0 {
		return Errorf(Invalid, "ratio", "must be above 0 and at most 1000000")
	}
	if !e.Rounding.Valid() {
		return Errorf(Invalid, "rounding", "must be down, up, half_up or half_even")
	}
	if err := CheckPoints("min_points", e.MinPoints); err != nil {
		return err
	}
	if err := CheckPoints("max_points", e.MaxPoints); err != nil {
		return err
	}
	if e.MaxPoints < e.MinPoints {
		return Errorf(Invalid, "max_points", "must not be below min_points")
	}
	if e.DailyLimit < 0 || e.DailyLimit > MaxPoints {
		return Errorf(Invalid, "daily_limit", "must be between 0 (none) and %d", MaxPoints)
	}
	if e.MonthlyLimit < 0 || e.MonthlyLimit > MaxPoints {
		return Errorf(Invalid, "monthly_limit", "must be between 0 (none) and %d", MaxPoints)
	}
	if e.Identify != IdentifyCustomerRef && e.Identify != IdentifyAccountID {
		return Errorf(Invalid, "identify", "must be customer_ref or account_id")
	}
	if e.AccountPattern != "" {
		if len(e.AccountPattern) > 200 {
			return Errorf(Invalid, "account_pattern", "is at most 200 characters")
		}
		if _, err := regexp.Compile(e.AccountPattern); err != nil {
			return Errorf(Invalid, "account_pattern", "is not a regular expression: %v", err)
		}
	}
	switch e.Flavour {
	case FlavourHTTP:
		if strings.TrimSpace(e.Endpoint) == "" {
			return Errorf(Invalid, "endpoint", "is required for flavour http: "+
				"the base URL of the partner's API")
		}
		u, err := url.Parse(e.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return Errorf(Invalid, "endpoint",
				"must be an http or https URL without credentials, query or fragment")
		}
		if ip, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]")); err == nil &&
			!PartnerAddrAllowed(ip) {
			return Errorf(Invalid, "endpoint", "must not be a link-local, multicast or "+
				"unspecified address (such as a cloud metadata service)")
		}
	case FlavourFile:
		if e.Endpoint != "" {
			return Errorf(Invalid, "endpoint", "is not used by the file flavour")
		}
	default:
		return Errorf(Invalid, "flavour", "must be http or file")
	}
	if len(e.Credentials) > 4096 || strings.ContainsAny(e.Credentials, "\r\n") {
		return Errorf(Invalid, "credentials", "must be one line of at most 4096 characters")
	}
	return nil
}

// PartnerAddrAllowed tells whether Puntos may connect to ip to reach a
// partner: never a link-local address (169.254.0.0/16, where cloud metadata
// services answer, or fe80::/10), a multicast or the unspecified address.
// Private and loopback addresses are allowed: partners may sit on the
// operator's own network.
func PartnerAddrAllowed(ip netip.Addr) bool {
	ip = ip.Unmap()
	return !(ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsUnspecified())
}

// Public returns a copy fit to show or log: the secret masked.
func (e ExternalProgram) Public() ExternalProgram {
	if e.Credentials != "" {
		e.Credentials = Masked
	}
	return e
}

// LogValue makes log/slog show the configuration with its secret masked.
func (e ExternalProgram) LogValue() slog.Value {
	return slog.GroupValue(slog.String("code", e.Code), slog.String("flavour", e.Flavour),
		slog.String("endpoint", e.Endpoint), slog.String("credentials", e.Public().Credentials))
}

// Amount is what a conversion of p points is worth in the other program,
// rounded as configured. Errors: invalid; an amount past the ledger's bound
// is refused about "points", the field of the conversion request at fault.
func (e *ExternalProgram) Amount(p Points) (int64, error) {
	ratio, err := ParseRate("ratio", e.Ratio)
	if err != nil {
		return 0, err
	}
	n, err := Round(new(big.Rat).Mul(big.NewRat(int64(p), 1), ratio), e.Rounding)
	if ce, ok := AsError(err); ok && ce.Field == "amount" {
		return 0, Errorf(Invalid, "points", "are worth more than %d in %s at ratio %s; "+
			"convert fewer points", MaxPoints, e.Code, e.Ratio)
	}
	if err != nil {
		return 0, err
	}
	return int64(n), nil
}

// CheckWhole refuses a conversion of p points that rounding would charge
// for points buying nothing: when amount (what Amount answered for p) is
// less than p points are worth and fewer points already buy it. The error
// names "points" and says which counts convert whole: the fewest points
// that buy amount and, within max_points, the fewest that buy one unit
// more. A rounding up to the member's favour is left alone.
func (e *ExternalProgram) CheckWhole(p Points, amount int64) error {
	ratio, err := ParseRate("ratio", e.Ratio)
	if err != nil {
		return err
	}
	worth := new(big.Rat).Mul(big.NewRat(int64(p), 1), ratio)
	if worth.Cmp(new(big.Rat).SetInt64(amount)) <= 0 {
		return nil
	}
	least := max(e.MinPoints, 1)
	fewest := e.fewestFor(amount, least, p)
	if fewest >= p {
		return nil
	}
	msg := fmt.Sprintf("rounding %s %s at ratio %s gives %d in %s, which %s already "+
		"buy: convert %s", e.Rounding, PointsText(p), e.Ratio, amount, e.Code,
		PointsText(fewest), PointsText(fewest))
	top := e.MaxPoints
	if top <= 0 || top > MaxPoints {
		top = MaxPoints
	}
	if p < top {
		if next := e.fewestFor(amount+1, p+1, top); next > 0 {
			msg += fmt.Sprintf(", or %d for %d", next, amount+1)
		}
	}
	return Errorf(Invalid, "points", "%s", msg)
}

// PointsText writes a count of points as a sentence says it: "1 point",
// "25 points".
func PointsText[N ~int64](n N) string {
	if n == 1 {
		return "1 point"
	}
	return fmt.Sprintf("%d points", n)
}

// fewestFor answers the fewest points in [lo, hi] that convert to at least
// want, or 0 when even hi does not. Amount grows with the points, so a
// binary search finds it; a count worth more than the ledger can hold
// counts as enough.
func (e *ExternalProgram) fewestFor(want int64, lo, hi Points) Points {
	enough := func(q Points) bool {
		n, err := e.Amount(q)
		return err != nil || n >= want
	}
	if lo > hi || !enough(hi) {
		return 0
	}
	for lo < hi {
		mid := lo + (hi-lo)/2
		if enough(mid) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// ConvertRequest is the payload of a conversion request.
type ConvertRequest struct {
	External  string `json:"external"`
	Points    Points `json:"points"`
	AccountID string `json:"account_id,omitempty"`
}

// Conversion is one conversion of a member's points into an external
// program, as the ledger records it and the adapter settles it.
type Conversion struct {
	ID       string `json:"id"`
	Program  string `json:"program"`
	Member   string `json:"member"`
	External string `json:"external"`
	Points   Points `json:"points"`
	// Amount is what the other program credits, in its own units.
	Amount int64 `json:"amount"`
	// AccountID is the member's id at the other program.
	AccountID string `json:"account_id"`
	Status    string `json:"status"`
	// TxnID is the transaction id the other program receives: ours, the same
	// on every retry.
	TxnID       string     `json:"txn_id"`
	HoldTxnID   string     `json:"hold_txn_id"`
	Reference   string     `json:"reference,omitempty"`
	RefusalCode string     `json:"refusal_code,omitempty"`
	Attempts    int        `json:"attempts"`
	LastError   string     `json:"last_error,omitempty"`
	RequestedAt time.Time  `json:"requested_at"`
	ResolvedAt  *time.Time `json:"resolved_at,omitempty"`
	// Dispute is what the other program answered about a settled
	// conversion when it differs from how we settled it, and DisputedAt
	// when the reconciliation first saw it; a person decides what to do.
	Dispute    string     `json:"dispute,omitempty"`
	DisputedAt *time.Time `json:"disputed_at,omitempty"`
	// DisputeSettledAt, By and Note say who marked the dispute settled,
	// when and how (the member's points put right by an adjustment, say).
	DisputeSettledAt *time.Time `json:"dispute_settled_at,omitempty"`
	DisputeSettledBy string     `json:"dispute_settled_by,omitempty"`
	DisputeNote      string     `json:"dispute_note,omitempty"`
}

// ConversionHoldTxn is the transaction id of the hold a conversion puts on
// the member's points (source SourceConversion).
func ConversionHoldTxn(id string) string { return id + ".hold" }

// ConversionCaptureTxn is the transaction id of the capture that settles a
// confirmed conversion.
func ConversionCaptureTxn(id string) string { return id + ".capture" }

// ConversionReleaseTxn is the transaction id of the release that settles a
// refused conversion.
func ConversionReleaseTxn(id string) string { return id + ".release" }

// DayStart is the first instant of the local day of t in loc.
func DayStart(t time.Time, loc *time.Location) time.Time {
	y, m, d := t.In(loc).Date()
	return StartOfDay(y, m, d, loc)
}

// MonthStart is the first instant of the local month of t in loc.
func MonthStart(t time.Time, loc *time.Location) time.Time {
	y, m, _ := t.In(loc).Date()
	return StartOfDay(y, m, 1, loc)
}
