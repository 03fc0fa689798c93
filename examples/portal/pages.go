package portal

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"html/template"
	"net/http"
	"strings"
	"time"
)

//go:embed templates/*.html
var templateFS embed.FS

// pages holds one parsed template set per page, each built on layout.html.
type pages struct {
	login, totp, code, csrf, dashboard, invoices, account *template.Template
}

// pageData is what every page template gets.
type pageData struct {
	Title    string
	CSRF     string
	Error    string
	Banner   string // the login page's notice (Config.LoginBanner)
	Username string
	NewToken string // the API token, on the first dashboard view after login only
	Invoices []Invoice
}

func parsePages() pages {
	base := template.Must(template.ParseFS(templateFS, "templates/layout.html", "templates/nav.html"))
	page := func(name string) *template.Template {
		return template.Must(template.Must(base.Clone()).ParseFS(templateFS, "templates/"+name))
	}
	return pages{
		login:     page("login.html"),
		totp:      page("totp.html"),
		code:      page("code.html"),
		csrf:      page("csrf.html"),
		dashboard: page("dashboard.html"),
		invoices:  page("invoices.html"),
		account:   page("account.html"),
	}
}

func (ps pages) forStep(s loginStep) *template.Template {
	if s == stepTOTP {
		return ps.totp
	}
	return ps.code
}

// render writes a page with status. Pages are never cached, as on real sites behind
// a login.
func (p *Portal) render(w http.ResponseWriter, status int, t *template.Template, data pageData) {
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", data); err != nil {
		p.log.Error("render page", "page", data.Title, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// handleDashboard shows the logged-in user. On the first view after login it hands
// the API token to the page's script, which keeps it in localStorage; later views
// read it from there, so a browser that lost its localStorage shows "token missing".
func (p *Portal) handleDashboard(w http.ResponseWriter, r *http.Request) {
	s, ok := p.authenticate(w, r)
	if !ok {
		http.Redirect(w, r, "/login", http.StatusFound)
		return
	}
	data := pageData{Title: "Dashboard", Username: s.user}
	p.mu.Lock()
	if !s.tokenDelivered {
		s.tokenDelivered = true
		data.NewToken = s.apiToken
	}
	p.mu.Unlock()
	p.render(w, http.StatusOK, p.pages.dashboard, data)
}

func (p *Portal) handleInvoices(w http.ResponseWriter, r *http.Request) {
	s, ok := p.authenticate(w, r)
	if !ok {
		http.Redirect(w, r, "/login", http.StatusFound)
		return
	}
	p.render(w, http.StatusOK, p.pages.invoices, pageData{
		Title:    "Invoices",
		Username: s.user,
		Invoices: InvoicesFor(s.user),
	})
}

// handleAPIMe answers {"username": ...} for a valid bearer token or, without an
// Authorization header, a valid session cookie.
func (p *Portal) handleAPIMe(w http.ResponseWriter, r *http.Request) {
	user, present, ok := p.authenticateBearer(r)
	if !present {
		var s *session
		if s, ok = p.authenticate(w, r); ok {
			user = s.user
		}
	}
	if !ok {
		writeUnauthorized(w)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"username": user})
}

// handleAPIToken answers {"token": ...}, the session's bearer token, for a valid
// session cookie. The dashboard doesn't use it; HTTP clients can.
func (p *Portal) handleAPIToken(w http.ResponseWriter, r *http.Request) {
	s, ok := p.authenticate(w, r)
	if !ok {
		writeUnauthorized(w)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"token": s.apiToken})
}

func writeUnauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="portal"`)
	writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Invoice is one row of the /invoices table.
type Invoice struct {
	Number string `json:"number"`
	Date   string `json:"date"`   // YYYY-MM-DD
	Amount string `json:"amount"` // like "$123.45"
	Status string `json:"status"` // paid, open or overdue
}

// InvoicesFor returns the five invoices /invoices shows for username, in table
// order. They are derived from the username alone, so tests can compare what an
// automation extracted with them.
func InvoicesFor(username string) []Invoice {
	h := fnv.New64a()
	_, _ = h.Write([]byte(username))
	seed := h.Sum64()
	statuses := [...]string{"paid", "paid", "open", "paid", "overdue"}
	out := make([]Invoice, len(statuses))
	for i := range out {
		x := seed ^ uint64(i+1)*0x9E3779B97F4A7C15
		x ^= x >> 31
		cents := 1000 + x%99000
		day := 1 + int(x>>20)%28
		out[i] = Invoice{
			Number: fmt.Sprintf("INV-%s-%04d", strings.ToUpper(username), 1001+i),
			Date:   time.Date(2025, time.Month(1+i), day, 0, 0, 0, 0, time.UTC).Format(time.DateOnly),
			Amount: fmt.Sprintf("$%d.%02d", cents/100, cents%100),
			Status: statuses[i],
		}
	}
	return out
}
