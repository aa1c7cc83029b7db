package core

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"golang.org/x/text/unicode/norm"
)

// Exchange command kinds: the rewards catalog and the partner merchants that
// accept points. Every kind starts with "exchange." so that the ledger hands
// them to one dispatcher.
const (
	KindRewardUpsert     = "exchange.reward.upsert"
	KindOrderPlace       = "exchange.order.place"
	KindOrderCancel      = "exchange.order.cancel"
	KindPartnerUpsert    = "exchange.partner.upsert"
	KindPartnerKeyCreate = "exchange.partner.key.create"
	KindPartnerKeyRevoke = "exchange.partner.key.revoke"
	KindPartnerRefund    = "exchange.partner.refund"
	KindPartnerClawback  = "exchange.partner.clawback"
)

// ExchangePrefix starts every exchange command kind.
const ExchangePrefix = "exchange."

// PartnerSourcePrefix starts the source of every command a partner sends:
// "partner:<code>".
const PartnerSourcePrefix = "partner:"

// EventPartnerPurchase is the event type of a purchase a partner reports
// (POST /v1/partner/members/{member}/purchases). A program whose rules name
// it earns by them; otherwise the purchase earns the program's flat rate.
const EventPartnerPurchase = "partner_purchase"

// PartnerSource is the command source of the partner with the given code.
func PartnerSource(code string) string { return PartnerSourcePrefix + code }

// ReservedSource reports whether source is one Puntos gives its own
// commands (the back office, conversions, bulk files, partners, the
// sweep), compared without regard to case or to compatibility forms
// (fullwidth letters, a fullwidth colon): an API key or SOAP user named so
// would share their idempotency keys, could answer or block the back
// office's approvals with a transaction id of theirs, or look like them in
// the audit log.
func ReservedSource(source string) bool {
	s := strings.ToLower(norm.NFKC.String(source))
	switch s {
	case "backoffice", SourceConversion, "puntos":
		return true
	}
	for _, prefix := range []string{PartnerSourcePrefix, "file:", "puntos."} {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

// Partner key scopes: the operations a key may call.
const (
	ScopeBalance   = "balance"
	ScopeAuthorize = "authorize"
	ScopeCapture   = "capture"
	ScopeVoid      = "void"
	ScopeRefund    = "refund"
	ScopeEarn      = "earn"
	ScopeSettle    = "settlement"
)

// Scopes lists every partner key scope.
var Scopes = []string{ScopeBalance, ScopeAuthorize, ScopeCapture, ScopeVoid, ScopeRefund,
	ScopeEarn, ScopeSettle}

var codeRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// ValidCode reports whether s is a catalog or partner code: 1-64 lower-case
// letters, digits, '-' or '_', starting with a letter or digit.
func ValidCode(s string) bool { return codeRE.MatchString(s) }

// CatalogCodeRule says what ValidCode accepts, for error messages.
const CatalogCodeRule = "1-64 lower-case letters, digits, - or _"

// CheckCatalogCode refuses s, given as field, unless ValidCode accepts it.
// Errors: invalid.
func CheckCatalogCode(field, s string) error {
	if ValidCode(s) {
		return nil
	}
	return codeError(field, s, CatalogCodeRule)
}

// MaxCount bounds a reward's stock and limits: a count of units the ledger
// can add an order's quantity back to without leaving bigint.
const MaxCount = 1_000_000_000_000

// Reward is an item of the rewards catalog. Stock nil is unlimited; limits
// nil are none. Tiers empty means every member may redeem it.
type Reward struct {
	Code        string `json:"code"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Points      Points `json:"points"`
	// A points-plus-money price, when both are set: MoneyPoints points and
	// MoneyAmount in the program's currency.
	MoneyPoints         Points     `json:"money_points,omitempty"`
	MoneyAmount         string     `json:"money_amount,omitempty"`
	Stock               *int64     `json:"stock,omitempty"`
	ValidFrom           *time.Time `json:"valid_from,omitempty"`
	ValidUntil          *time.Time `json:"valid_until,omitempty"`
	PerMemberLimit      *int64     `json:"per_member_limit,omitempty"`
	ProgramLimit        *int64     `json:"program_limit,omitempty"`
	Tiers               []string   `json:"tiers,omitempty"`
	Partner             string     `json:"partner,omitempty"`
	CancelWindowSeconds int        `json:"cancel_window_seconds,omitempty"`
	Active              *bool      `json:"active,omitempty"`
	// Read-only figures.
	Redeemed  int64      `json:"redeemed"`
	UpdatedAt *time.Time `json:"updated_at,omitempty"`
}

// RewardUpsert is the payload of KindRewardUpsert: the reward, which
// replaces the one of its code as a whole, and optionally the stock its
// editor was shown. An edit form sends CheckStock, so that saving a form
// drawn before orders took units does not put those units back on sale; the
// REST API sends the reward alone.
type RewardUpsert struct {
	Reward
	// CheckStock asks the ledger to refuse the save (conflict on "stock")
	// unless the reward exists and its stock is still StockShown (nil:
	// unlimited).
	CheckStock bool   `json:"check_stock,omitempty"`
	StockShown *int64 `json:"stock_shown,omitempty"`
	// Create asks the ledger to refuse the save (conflict on "code") when a
	// reward of that code exists: the form for a new reward must not
	// replace one, its stock with it.
	Create bool `json:"create,omitempty"`
}

// Validate checks a reward as the operator sends it.
func (r *Reward) Validate() error {
	if !ValidCode(r.Code) {
		return Errorf(Invalid, "code", "must be "+CatalogCodeRule)
	}
	if strings.TrimSpace(r.Name) == "" || len(r.Name) > 200 {
		return Errorf(Invalid, "name", "is required, at most 200 characters")
	}
	if err := checkName(r.Name, true); err != nil {
		return err
	}
	if len(r.Description) > 4000 {
		return Errorf(Invalid, "description", "is at most 4000 characters")
	}
	if err := CheckPoints("points", r.Points); err != nil {
		return err
	}
	if (r.MoneyPoints != 0) != (r.MoneyAmount != "") {
		return Errorf(Invalid, "money_amount", "a points-plus-money price needs both "+
			"money_points and money_amount")
	}
	if r.MoneyAmount != "" {
		if err := CheckPoints("money_points", r.MoneyPoints); err != nil {
			return err
		}
		a, err := ParseAmount("money_amount", r.MoneyAmount)
		if err != nil {
			return err
		}
		if a.Sign() <= 0 {
			return Errorf(Invalid, "money_amount", "must be positive")
		}
	}
	if r.Stock != nil && *r.Stock < 0 {
		return Errorf(Invalid, "stock", "must not be negative; leave it out for unlimited")
	}
	if r.Stock != nil && *r.Stock > MaxCount {
		return Errorf(Invalid, "stock", "must be at most %d; leave it out for unlimited", MaxCount)
	}
	if r.ValidFrom != nil && r.ValidUntil != nil && !Later(*r.ValidUntil, *r.ValidFrom) {
		return Errorf(Invalid, "valid_until", "must be after valid_from")
	}
	if r.PerMemberLimit != nil && (*r.PerMemberLimit <= 0 || *r.PerMemberLimit > MaxCount) {
		return Errorf(Invalid, "per_member_limit", "must be between 1 and %d; leave it out "+
			"for no limit", MaxCount)
	}
	if r.ProgramLimit != nil && (*r.ProgramLimit <= 0 || *r.ProgramLimit > MaxCount) {
		return Errorf(Invalid, "program_limit", "must be between 1 and %d; leave it out "+
			"for no limit", MaxCount)
	}
	for _, t := range r.Tiers {
		if strings.TrimSpace(t) == "" || len(t) > 64 {
			return Errorf(Invalid, "tiers", "each tier is 1-64 characters")
		}
	}
	if r.Partner != "" && !ValidCode(r.Partner) {
		return Errorf(Invalid, "partner", "must be a partner code")
	}
	if r.CancelWindowSeconds < 0 || r.CancelWindowSeconds > 365*24*3600 {
		return Errorf(Invalid, "cancel_window_seconds", "must be between 0 and 31536000")
	}
	return nil
}

// PlaceOrder redeems a reward for the command's member.
type PlaceOrder struct {
	Reward   string `json:"reward"`
	Quantity int64  `json:"quantity,omitempty"`
	// Price is "points" (the default) or "points_plus_money".
	Price string `json:"price,omitempty"`
}

// The prices an order may be placed at.
const (
	PricePoints          = "points"
	PricePointsPlusMoney = "points_plus_money"
)

// CancelOrder cancels an order of the command's member.
type CancelOrder struct {
	OrderID string `json:"order_id"`
	Reason  string `json:"reason,omitempty"`
}

// Order is a redemption of a catalog reward.
type Order struct {
	ID          string     `json:"id"`
	Reward      string     `json:"reward"`
	Member      string     `json:"member"`
	Quantity    int64      `json:"quantity"`
	Points      Points     `json:"points"`
	MoneyAmount string     `json:"money_amount,omitempty"`
	Voucher     string     `json:"voucher"`
	Status      string     `json:"status"`
	PostingID   int64      `json:"posting_id"`
	TxnID       string     `json:"txn_id"`
	CancelUntil *time.Time `json:"cancel_until,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	CancelledAt *time.Time `json:"cancelled_at,omitempty"`
	Balance     *Balance   `json:"balance,omitempty"`
}

// Order statuses.
const (
	OrderPlaced    = "placed"
	OrderCancelled = "cancelled"
)

// Partner is a business that accepts points as payment or gives them for
// purchases paid in money. PointValue is the worth of one point in the
// partner's settlement currency, a decimal string.
type Partner struct {
	Code           string     `json:"code"`
	Name           string     `json:"name"`
	Currency       string     `json:"currency"`
	PointValue     string     `json:"point_value"`
	CanBurn        bool       `json:"can_burn"`
	CanEarn        bool       `json:"can_earn"`
	MaxBurnPoints  Points     `json:"max_burn_points,omitempty"`
	MaxEarnAmount  string     `json:"max_earn_amount,omitempty"`
	HoldTTLSeconds int        `json:"hold_ttl_seconds,omitempty"`
	Active         *bool      `json:"active,omitempty"`
	Program        string     `json:"program,omitempty"`
	UpdatedAt      *time.Time `json:"updated_at,omitempty"`
}

// Validate checks a partner as the operator sends it.
func (p *Partner) Validate() error {
	if !ValidCode(p.Code) {
		return Errorf(Invalid, "code", "must be "+CatalogCodeRule)
	}
	if strings.TrimSpace(p.Name) == "" || len(p.Name) > 200 {
		return Errorf(Invalid, "name", "is required, at most 200 characters")
	}
	if err := checkName(p.Name, true); err != nil {
		return err
	}
	if !ValidCurrency(p.Currency) {
		return Errorf(Invalid, "currency", "must be an ISO 4217 code in capitals, such as CLP")
	}
	v, err := ParseAmount("point_value", p.PointValue)
	if err != nil {
		return err
	}
	if v.Sign() < 0 {
		return Errorf(Invalid, "point_value", "must not be negative")
	}
	if p.MaxBurnPoints < 0 || p.MaxBurnPoints > MaxPoints {
		return Errorf(Invalid, "max_burn_points", "must be between 0 (no limit) and %d",
			MaxPoints)
	}
	if p.MaxEarnAmount != "" {
		a, err := ParseAmount("max_earn_amount", p.MaxEarnAmount)
		if err != nil {
			return err
		}
		if a.Sign() <= 0 {
			return Errorf(Invalid, "max_earn_amount", "must be positive")
		}
	}
	if p.HoldTTLSeconds < 0 || p.HoldTTLSeconds > 90*24*3600 {
		return Errorf(Invalid, "hold_ttl_seconds", "must be between 0 and 7776000")
	}
	return nil
}

// CreatePartnerKey stores a new API key of a partner. The gateway makes the
// key and sends only its SHA-256 digest: the key itself never reaches the
// bus or the database.
type CreatePartnerKey struct {
	Partner string   `json:"partner"`
	KeyID   string   `json:"key_id"`
	Prefix  string   `json:"prefix"`
	Digest  string   `json:"digest"`
	Scopes  []string `json:"scopes"`
}

// PartnerKeyPrefix starts every partner API key, so that the gateway can
// tell a partner's key from an operator's before looking it up.
const PartnerKeyPrefix = "pk_"

// PartnerKeyDigest is what the ledger stores of a partner key and looks it
// up by: its SHA-256. A fast digest is enough for a key of 256 random bits,
// which no guessing can reach, and it lets a request find its key through
// an index instead of trying a slow hash against every key.
func PartnerKeyDigest(key string) []byte {
	sum := sha256.Sum256([]byte(key))
	return sum[:]
}

// NewPartnerKey mints a key for partner with scopes (at least one, each in
// Scopes). It returns the key, to be shown once to whoever asked for it, and
// the command payload that stores only its digest and first characters.
func NewPartnerKey(partner string, scopes []string) (string, CreatePartnerKey, error) {
	if len(scopes) == 0 {
		return "", CreatePartnerKey{}, Errorf(Invalid, "scopes",
			"name the operations the key may call: %s", strings.Join(Scopes, ", "))
	}
	for _, sc := range scopes {
		if !slices.Contains(Scopes, sc) {
			return "", CreatePartnerKey{}, Errorf(Invalid, "scopes", "unknown scope %q", sc)
		}
	}
	var raw [32]byte
	_, _ = rand.Read(raw[:])
	key := PartnerKeyPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	return key, CreatePartnerKey{Partner: partner, KeyID: uuid.Must(uuid.NewV7()).String(),
		Prefix: key[:10], Digest: hex.EncodeToString(PartnerKeyDigest(key)),
		Scopes: scopes}, nil
}

// RevokePartnerKey revokes a partner's API key for good.
type RevokePartnerKey struct {
	Partner string `json:"partner"`
	KeyID   string `json:"key_id"`
}

// PartnerKey describes a partner's API key; the key itself is never kept.
type PartnerKey struct {
	ID        string     `json:"id"`
	Partner   string     `json:"partner"`
	Prefix    string     `json:"prefix"`
	Scopes    []string   `json:"scopes"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// PartnerRefund gives back points of a captured partner payment, named by
// the authorization's transaction id. Points 0 refunds all that is left.
type PartnerRefund struct {
	HoldTxnID string `json:"hold_txn_id"`
	Points    Points `json:"points,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

// PartnerClawback takes back the points a purchase paid in money earned,
// for a returned or cancelled purchase: Amount is the money refunded, which
// converts to points at the program's rate and rounding. Currency must be
// the program's; when the partner names none, the ledger reads the
// partner's settlement currency, as for a purchase.
type PartnerClawback struct {
	Amount   string `json:"amount"`
	Currency string `json:"currency,omitempty"`
	Reason   string `json:"reason,omitempty"`
}
