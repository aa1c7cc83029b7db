package rest

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
)

// ExchangeReader answers the queries of the rewards catalog and of partner
// merchants. The ledger implements it; a Reader that does not makes those
// routes answer 503.
type ExchangeReader interface {
	Reward(ctx context.Context, program, code string) (*core.Reward, error)
	Rewards(ctx context.Context, program, cursor string, limit int) ([]core.Reward, string,
		error)
	Orders(ctx context.Context, program, ref string) ([]core.Order, error)
	Order(ctx context.Context, program, ref, id string) (*core.Order, error)
	Partner(ctx context.Context, program, code string) (*core.Partner, []core.PartnerKey, error)
	PartnerByKey(ctx context.Context, digest []byte) (*postgres.PartnerAuth, error)
	PartnerTransaction(ctx context.Context, source, txn string) (*postgres.PartnerTxn, error)
	Settlement(ctx context.Context, program, partner string, from,
		to time.Time) (*postgres.Settlement, error)
}

// exchange returns the reader of the catalog and partner queries.
func (s *Server) exchange() (ExchangeReader, error) {
	x, ok := s.read.(ExchangeReader)
	if !ok {
		return nil, core.Errorf(core.Unavailable, "", "the exchange is not served here")
	}
	return x, nil
}

// registerCatalog adds the operator's routes of the rewards catalog and of
// partner management to v1.
func (s *Server) registerCatalog(v1 *mux.Router) {
	p := "/programs/{program}"
	m := p + "/members/{member}"
	v1.HandleFunc(p+"/rewards", s.upsertReward).Methods(http.MethodPost)
	v1.HandleFunc(p+"/rewards", s.listRewards).Methods(http.MethodGet)
	v1.HandleFunc(p+"/rewards/{reward}", s.getReward).Methods(http.MethodGet)
	v1.HandleFunc(m+"/orders", s.placeOrder).Methods(http.MethodPost)
	v1.HandleFunc(m+"/orders", s.listOrders).Methods(http.MethodGet)
	v1.HandleFunc(m+"/orders/{order}", s.getOrder).Methods(http.MethodGet)
	v1.HandleFunc(m+"/orders/{order}/cancel", s.cancelOrder).Methods(http.MethodPost)
	v1.HandleFunc(p+"/partners", s.upsertPartner).Methods(http.MethodPost)
	v1.HandleFunc(p+"/partners/{partner}", s.getPartner).Methods(http.MethodGet)
	v1.HandleFunc(p+"/partners/{partner}/keys", s.createPartnerKey).Methods(http.MethodPost)
	v1.HandleFunc(p+"/partners/{partner}/keys/{key}/revoke",
		s.revokePartnerKey).Methods(http.MethodPost)
	v1.HandleFunc(p+"/partners/{partner}/settlement", s.operatorSettlement).
		Methods(http.MethodGet)
}

func (s *Server) upsertReward(w http.ResponseWriter, r *http.Request) {
	var in core.Reward
	s.write(w, r, core.KindRewardUpsert, &in, func() (string, any, *time.Time, error) {
		if in.Redeemed != 0 || in.UpdatedAt != nil {
			return "", nil, nil, core.Errorf(core.Invalid, "redeemed", "is kept by Puntos")
		}
		in.MoneyAmount = strings.TrimSpace(in.MoneyAmount)
		if err := in.Validate(); err != nil {
			return "", nil, nil, err
		}
		return "", in, nil, nil
	})
}

func (s *Server) listRewards(w http.ResponseWriter, r *http.Request) {
	x, err := s.exchange()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	limit, err := queryInt(r, "limit", 50)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	list, next, err := x.Rewards(r.Context(), mux.Vars(r)["program"],
		r.URL.Query().Get("cursor"), limit)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	body := map[string]any{"rewards": list}
	if next != "" {
		body["next_cursor"] = next
	}
	writeJSON(w, http.StatusOK, body)
}

func (s *Server) getReward(w http.ResponseWriter, r *http.Request) {
	x, err := s.exchange()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	rw, err := x.Reward(r.Context(), mux.Vars(r)["program"], mux.Vars(r)["reward"])
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rw)
}

// placeOrderBody is the body of an order. Its quantity is a pointer so that
// a quantity left out (one unit) is told apart from an explicit 0, which is
// refused like any other quantity out of range.
type placeOrderBody struct {
	Reward   string `json:"reward"`
	Quantity *int64 `json:"quantity"`
	Price    string `json:"price"`
}

func (s *Server) placeOrder(w http.ResponseWriter, r *http.Request) {
	var in placeOrderBody
	s.write(w, r, core.KindOrderPlace, &in, func() (string, any, *time.Time, error) {
		if !core.ValidCode(in.Reward) {
			return "", nil, nil, core.Errorf(core.Invalid, "reward", "is required: a reward code")
		}
		// An unknown price can never apply: refused here, it uses no
		// transaction id and leaves no dead letter.
		if in.Price != "" && in.Price != core.PricePoints &&
			in.Price != core.PricePointsPlusMoney {
			return "", nil, nil, core.Errorf(core.Invalid, "price",
				"must be points or points_plus_money")
		}
		// A quantity left out stays out of the command, as before, and the
		// ledger places one unit.
		var quantity int64
		if in.Quantity != nil {
			quantity = *in.Quantity
			if quantity < 1 || quantity > 1000 {
				return "", nil, nil, core.Errorf(core.Invalid, "quantity",
					"must be between 1 and 1000")
			}
		}
		return memberVar(r), core.PlaceOrder{Reward: in.Reward, Quantity: quantity,
			Price: in.Price}, nil, nil
	})
}

func (s *Server) listOrders(w http.ResponseWriter, r *http.Request) {
	x, err := s.exchange()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	list, err := x.Orders(r.Context(), mux.Vars(r)["program"], memberVar(r))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"orders": list})
}

func (s *Server) getOrder(w http.ResponseWriter, r *http.Request) {
	x, err := s.exchange()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	o, err := x.Order(r.Context(), mux.Vars(r)["program"], memberVar(r), mux.Vars(r)["order"])
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, o)
}

type cancelBody struct {
	Reason string `json:"reason"`
}

func (s *Server) cancelOrder(w http.ResponseWriter, r *http.Request) {
	var in cancelBody
	s.write(w, r, core.KindOrderCancel, &in, func() (string, any, *time.Time, error) {
		if err := core.CheckReason(in.Reason, false); err != nil {
			return "", nil, nil, err
		}
		return memberVar(r), core.CancelOrder{OrderID: mux.Vars(r)["order"],
			Reason: in.Reason}, nil, nil
	})
}
