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

// ConversionReader answers the reads of conversions into external
// programs. The ledger implements it; a Reader without it answers those
// reads with 503.
type ConversionReader interface {
	// ExternalProgram answers one external program, its credentials masked.
	ExternalProgram(ctx context.Context, program, code string) (*core.ExternalProgram, error)
	// ExternalPrograms answers a program's external programs by code, their
	// credentials masked as ExternalProgram masks them.
	ExternalPrograms(ctx context.Context, program string) ([]core.ExternalProgram, error)
	Conversion(ctx context.Context, program, member, id string) (*core.Conversion, error)
	// Conversions answers a page of a member's conversions, newest first.
	Conversions(ctx context.Context, program, member, cursor string, limit int) (
		*postgres.ConversionPage, error)
}

// registerConversions adds the routes of conversions into other companies'
// programs: their configuration and the members' conversions.
func (s *Server) registerConversions(v1 *mux.Router) {
	p := "/programs/{program}"
	m := p + "/members/{member}"
	v1.HandleFunc(p+"/external", s.listExternal).Methods(http.MethodGet)
	v1.HandleFunc(p+"/external/{code}", s.putExternal).Methods(http.MethodPut)
	v1.HandleFunc(p+"/external/{code}", s.getExternal).Methods(http.MethodGet)
	v1.HandleFunc(m+"/conversions", s.convert).Methods(http.MethodPost)
	v1.HandleFunc(m+"/conversions", s.listConversions).Methods(http.MethodGet)
	v1.HandleFunc(m+"/conversions/{conversion}", s.getConversion).Methods(http.MethodGet)
	v1.HandleFunc(m+"/conversions/{conversion}/resolve", s.resolveConversion).
		Methods(http.MethodPost)
}

// resolveConversion settles a pending conversion as a person says the other
// program decided (X-Actor names the person, the reason how it is known).
func (s *Server) resolveConversion(w http.ResponseWriter, r *http.Request) {
	var in core.ResolveConversion
	s.write(w, r, core.KindConversionResolve, &in, func() (string, any, *time.Time, error) {
		if in.ID != "" && in.ID != mux.Vars(r)["conversion"] {
			return "", nil, nil, core.Errorf(core.Invalid, "id", "differs from the path")
		}
		in.ID = mux.Vars(r)["conversion"]
		if err := in.Check(); err != nil {
			return "", nil, nil, err
		}
		if strings.TrimSpace(r.Header.Get("X-Actor")) == "" {
			return "", nil, nil, core.Errorf(core.Invalid, "X-Actor",
				"must name the person who resolves the conversion")
		}
		return memberVar(r), in, nil, nil
	})
}

// putExternal creates or replaces an external program. The command's
// member is the external program's code; the ledger checks it. The body
// decodes as a core.ExternalUpsert, which tells `credentials` left out
// (keep the stored ones) from `credentials` given empty (none).
func (s *Server) putExternal(w http.ResponseWriter, r *http.Request) {
	var in core.ExternalUpsert
	s.write(w, r, core.KindExternalUpsert, &in, func() (string, any, *time.Time, error) {
		code := mux.Vars(r)["code"]
		if in.Code != "" && in.Code != code {
			return "", nil, nil, core.Errorf(core.Invalid, "code", "differs from the path")
		}
		in.Code = ""
		in.Defaults()
		// The code is a path segment here; the ledger judges it.
		probe := in.Config()
		probe.Code = "x"
		if err := probe.Validate(); err != nil {
			return "", nil, nil, err
		}
		return code, in, nil, nil
	})
}

// listExternal answers a program's external programs by code, each as
// getExternal answers it.
func (s *Server) listExternal(w http.ResponseWriter, r *http.Request) {
	cr := s.conversionReader(w, r)
	if cr == nil {
		return
	}
	list, err := cr.ExternalPrograms(r.Context(), mux.Vars(r)["program"])
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"external_programs": list})
}

func (s *Server) conversionReader(w http.ResponseWriter, r *http.Request) ConversionReader {
	cr, ok := s.read.(ConversionReader)
	if !ok {
		s.writeError(w, r, core.Errorf(core.Unavailable, "", "conversions cannot be read here"))
		return nil
	}
	return cr
}

// getExternal answers an external program with its credentials masked.
func (s *Server) getExternal(w http.ResponseWriter, r *http.Request) {
	cr := s.conversionReader(w, r)
	if cr == nil {
		return
	}
	e, err := cr.ExternalProgram(r.Context(), mux.Vars(r)["program"], mux.Vars(r)["code"])
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	pub := e.Public()
	writeJSON(w, http.StatusOK, pub)
}

func (s *Server) convert(w http.ResponseWriter, r *http.Request) {
	var in core.ConvertRequest
	s.write(w, r, core.KindConvert, &in, func() (string, any, *time.Time, error) {
		in.External = strings.TrimSpace(in.External)
		if in.External == "" {
			return "", nil, nil, core.Errorf(core.Invalid, "external",
				"is required: the code of the program to convert into")
		}
		if err := core.CheckPoints("points", in.Points); err != nil {
			return "", nil, nil, err
		}
		if in.AccountID != "" {
			if err := core.CheckRef("account_id", "", in.AccountID); err != nil {
				return "", nil, nil, err
			}
		}
		return memberVar(r), in, nil, nil
	})
}

// getConversion answers a conversion: pending until the other program
// confirmed or refused for sure.
func (s *Server) getConversion(w http.ResponseWriter, r *http.Request) {
	cr := s.conversionReader(w, r)
	if cr == nil {
		return
	}
	c, err := cr.Conversion(r.Context(), mux.Vars(r)["program"], memberVar(r),
		mux.Vars(r)["conversion"])
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

// listConversions answers a page of a member's conversions, newest first,
// paged as the statement is (cursor, limit).
func (s *Server) listConversions(w http.ResponseWriter, r *http.Request) {
	cr := s.conversionReader(w, r)
	if cr == nil {
		return
	}
	limit, err := queryInt(r, "limit", 50)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	page, err := cr.Conversions(r.Context(), mux.Vars(r)["program"], memberVar(r),
		r.URL.Query().Get("cursor"), limit)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}
