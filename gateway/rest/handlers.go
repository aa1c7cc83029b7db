package rest

import (
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/puntos-loyalty/puntos/core"
)

// handle runs one write: decode the body into in, let build turn it into
// the command's member, payload and occurrence time, then submit.
func (s *Server) write(w http.ResponseWriter, r *http.Request, kind string, in any,
	build func() (member string, payload any, occurred *time.Time, err error)) {
	if err := decodeBody(r, in); err != nil {
		s.writeError(w, r, err)
		return
	}
	member, payload, occurred, err := build()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	cmd, err := s.newCommand(r, kind, member, payload, occurred)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.submit(w, r, cmd)
}

func memberVar(r *http.Request) string { return mux.Vars(r)["member"] }

func (s *Server) putProgram(w http.ResponseWriter, r *http.Request) {
	var in core.Program
	s.write(w, r, core.KindProgramUpsert, &in, func() (string, any, *time.Time, error) {
		if in.Code != "" && in.Code != mux.Vars(r)["program"] {
			return "", nil, nil, core.Errorf(core.Invalid, "code", "differs from the path")
		}
		if in.ID != "" {
			return "", nil, nil, core.Errorf(core.Invalid, "id", "is assigned by Puntos")
		}
		in.Code = mux.Vars(r)["program"]
		in.Defaults()
		if err := in.Validate(); err != nil {
			return "", nil, nil, err
		}
		in.Code = ""
		return "", in, nil, nil
	})
}

func (s *Server) getProgram(w http.ResponseWriter, r *http.Request) {
	p, err := s.read.Program(r.Context(), mux.Vars(r)["program"])
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// listPrograms answers every program, in order of code.
func (s *Server) listPrograms(w http.ResponseWriter, r *http.Request) {
	ps, err := s.read.Programs(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"programs": ps})
}

// listMembers answers a page of the program's members in order of
// reference, of one status when ?status is given.
func (s *Server) listMembers(w http.ResponseWriter, r *http.Request) {
	limit, err := queryInt(r, "limit", 50)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	page, err := s.read.Members(r.Context(), mux.Vars(r)["program"], q.Get("status"),
		q.Get("cursor"), limit)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}

type enrollBody struct {
	CustomerRef string                 `json:"customer_ref"`
	Channel     string                 `json:"channel"`
	EnrolledAt  *time.Time             `json:"enrolled_at"`
	Attributes  *core.MemberAttributes `json:"attributes"`
}

func (s *Server) enroll(w http.ResponseWriter, r *http.Request) {
	var in enrollBody
	s.write(w, r, core.KindEnroll, &in, func() (string, any, *time.Time, error) {
		if err := core.CheckRef("customer_ref", "", in.CustomerRef); err != nil {
			return "", nil, nil, err
		}
		if len(in.Channel) > 64 {
			return "", nil, nil, core.Errorf(core.Invalid, "channel", "is at most 64 characters")
		}
		if in.Attributes != nil {
			if err := in.Attributes.Validate(); err != nil {
				return "", nil, nil, err
			}
		}
		return in.CustomerRef, core.Enroll{Channel: in.Channel, EnrolledAt: in.EnrolledAt,
			Attributes: in.Attributes}, nil, nil
	})
}

func (s *Server) getMember(w http.ResponseWriter, r *http.Request) {
	m, err := s.read.Member(r.Context(), mux.Vars(r)["program"], memberVar(r))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, m)
}

func (s *Server) getBalance(w http.ResponseWriter, r *http.Request) {
	// The lots behind the figures only when asked for: most callers (apps,
	// tills, IVRs) show the figures and the coming expiries, and a member
	// holding a hundred lots would otherwise cost every read a hundred rows.
	read := s.read.BalanceSummary
	if vals, ok := r.URL.Query()["lots"]; ok {
		// Once, true or false: an empty or repeated value is not guessed at.
		switch {
		case len(vals) == 1 && vals[0] == "true":
			read = s.read.Balance
		case len(vals) == 1 && vals[0] == "false":
		default:
			s.writeError(w, r, core.Errorf(core.Invalid, "lots",
				"must be given once, as true or false"))
			return
		}
	}
	b, err := read(r.Context(), mux.Vars(r)["program"], memberVar(r))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// The busiest read: encoded by hand, as writeJSON would (with its
	// newline), at a fraction of the cost.
	body, err := b.AppendJSON(make([]byte, 0, 1024+160*len(b.Lots)))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(body, '\n'))
}

func (s *Server) getMovements(w http.ResponseWriter, r *http.Request) {
	limit, err := queryInt(r, "limit", 50)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	page, err := s.read.Statement(r.Context(), mux.Vars(r)["program"], memberVar(r),
		r.URL.Query().Get("cursor"), limit)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}

type eventBody struct {
	Type       string     `json:"type"`
	Amount     *string    `json:"amount"`
	Currency   string     `json:"currency"`
	OccurredAt *time.Time `json:"occurred_at"`
	Partner    string     `json:"partner"`
}

func (s *Server) accrue(w http.ResponseWriter, r *http.Request) {
	var in eventBody
	s.write(w, r, core.KindAccrue, &in, func() (string, any, *time.Time, error) {
		acc, err := checkAccrual(in, s.now())
		if err != nil {
			return "", nil, nil, err
		}
		return memberVar(r), acc, in.OccurredAt, nil
	})
}

type creditBody struct {
	Points     core.Points `json:"points"`
	Reason     string      `json:"reason"`
	ExpiresAt  *time.Time  `json:"expires_at"`
	ExpiresOn  string      `json:"expires_on"`
	OccurredAt *time.Time  `json:"occurred_at"`
}

func (s *Server) credit(w http.ResponseWriter, r *http.Request) {
	var in creditBody
	s.write(w, r, core.KindCredit, &in, func() (string, any, *time.Time, error) {
		if err := core.CheckPoints("points", in.Points); err != nil {
			return "", nil, nil, err
		}
		if err := core.CheckReason(in.Reason, true); err != nil {
			return "", nil, nil, err
		}
		if in.ExpiresAt != nil {
			if err := core.CheckExpiry("expires_at", *in.ExpiresAt); err != nil {
				return "", nil, nil, err
			}
		}
		return memberVar(r), core.Credit{Points: in.Points, Reason: in.Reason,
			ExpiresAt: in.ExpiresAt, ExpiresOn: in.ExpiresOn}, in.OccurredAt, nil
	})
}

func (s *Server) redeem(w http.ResponseWriter, r *http.Request) {
	var in core.Redeem
	s.write(w, r, core.KindRedeem, &in, func() (string, any, *time.Time, error) {
		if err := core.CheckPoints("points", in.Points); err != nil {
			return "", nil, nil, err
		}
		if err := core.CheckReason(in.Reason, false); err != nil {
			return "", nil, nil, err
		}
		return memberVar(r), in, nil, nil
	})
}

func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	var in core.Authorize
	s.write(w, r, core.KindAuthorize, &in, func() (string, any, *time.Time, error) {
		if err := core.CheckPoints("points", in.Points); err != nil {
			return "", nil, nil, err
		}
		if err := core.CheckReason(in.Reason, false); err != nil {
			return "", nil, nil, err
		}
		return memberVar(r), in, nil, nil
	})
}

type captureBody struct {
	Points core.Points `json:"points"`
}

func (s *Server) capture(w http.ResponseWriter, r *http.Request) {
	var in captureBody
	s.write(w, r, core.KindCapture, &in, func() (string, any, *time.Time, error) {
		if in.Points < 0 || in.Points > core.MaxPoints {
			return "", nil, nil, core.Errorf(core.Invalid, "points",
				"must be between 0 (the whole hold) and %d", core.MaxPoints)
		}
		return memberVar(r), core.Capture{HoldTxnID: mux.Vars(r)["hold"], Points: in.Points},
			nil, nil
	})
}

func (s *Server) release(w http.ResponseWriter, r *http.Request) {
	var in struct{}
	s.write(w, r, core.KindRelease, &in, func() (string, any, *time.Time, error) {
		return memberVar(r), core.Release{HoldTxnID: mux.Vars(r)["hold"]}, nil, nil
	})
}

func (s *Server) reverse(w http.ResponseWriter, r *http.Request) {
	var in core.Reverse
	s.write(w, r, core.KindReverse, &in, func() (string, any, *time.Time, error) {
		if (in.PostingID > 0) == (in.OriginalTxnID != "") {
			return "", nil, nil, core.Errorf(core.Invalid, "posting_id",
				"give exactly one of posting_id and original_txn_id")
		}
		if err := core.CheckReason(in.Reason, true); err != nil {
			return "", nil, nil, err
		}
		return memberVar(r), in, nil, nil
	})
}

func (s *Server) adjust(w http.ResponseWriter, r *http.Request) {
	var in core.Adjust
	s.write(w, r, core.KindAdjust, &in, func() (string, any, *time.Time, error) {
		if in.Points == 0 || in.Points > core.MaxPoints || in.Points < -core.MaxPoints {
			return "", nil, nil, core.Errorf(core.Invalid, "points",
				"must be non-zero and at most %d either way", core.MaxPoints)
		}
		if err := core.CheckReason(in.Reason, true); err != nil {
			return "", nil, nil, err
		}
		if strings.TrimSpace(r.Header.Get("X-Actor")) == "" {
			return "", nil, nil, core.Errorf(core.Invalid, "X-Actor",
				"header must name the person making a manual adjustment")
		}
		return memberVar(r), in, nil, nil
	})
}

func (s *Server) transfer(w http.ResponseWriter, r *http.Request) {
	var in core.Transfer
	s.write(w, r, core.KindTransfer, &in, func() (string, any, *time.Time, error) {
		if err := core.CheckPoints("points", in.Points); err != nil {
			return "", nil, nil, err
		}
		if err := core.CheckReason(in.Reason, false); err != nil {
			return "", nil, nil, err
		}
		if err := core.CheckRef("to", "a member reference", in.To); err != nil {
			return "", nil, nil, err
		}
		return memberVar(r), in, nil, nil
	})
}

func (s *Server) merge(w http.ResponseWriter, r *http.Request) {
	var in core.Merge
	s.write(w, r, core.KindMerge, &in, func() (string, any, *time.Time, error) {
		if err := core.CheckRef("into", "the surviving member's reference",
			in.Into); err != nil {
			return "", nil, nil, err
		}
		return memberVar(r), in, nil, nil
	})
}

func (s *Server) status(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var in core.StatusChange
		s.write(w, r, kind, &in, func() (string, any, *time.Time, error) {
			if err := core.CheckReason(in.Reason, false); err != nil {
				return "", nil, nil, err
			}
			return memberVar(r), in, nil, nil
		})
	}
}
