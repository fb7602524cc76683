package console

import (
	"net/http"
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
)

// maxReason bounds a review's reason, as the CLI's is bounded by the
// message size: a reason is a sentence.
const maxReason = 1024

// refusal turns a service's error into what the person reads, and the
// HTTP status that goes with it. The services' messages already say what
// was wrong and what to do; they are the same the CLI prints.
func refusal(err error) (int, string) {
	st := status.Convert(err)
	code := http.StatusInternalServerError
	switch st.Code() {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		code = http.StatusBadRequest
	case codes.PermissionDenied, codes.Unauthenticated:
		code = http.StatusForbidden
	case codes.NotFound:
		code = http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		code = http.StatusConflict
	case codes.ResourceExhausted:
		code = http.StatusTooManyRequests
	case codes.Unavailable, codes.DeadlineExceeded:
		code = http.StatusServiceUnavailable
	}
	return code, st.Message()
}

// pendingRequest is a request with its rule's reviewer groups.
type pendingRequest struct {
	*writv1.AccessRequestDetail
}

func (c *Console) requestsPage(w http.ResponseWriter, r *http.Request) {
	c.showRequests(w, r, http.StatusOK, "", "")
}

// showRequests lists pending requests with who may approve each, and an
// outcome of the last review (notice) or why it was refused (errMsg).
func (c *Console) showRequests(w http.ResponseWriter, r *http.Request, code int, notice, errMsg string) {
	p := &page{Title: "Requests", Nav: "requests", Notice: notice, Error: errMsg}
	ctx, err := c.as(r, writv1.RequestService_ListRequests_FullMethodName)
	if err != nil {
		code, p.Error = refusal(err)
		c.render(w, r, code, "requests", p)
		return
	}
	list, err := c.cfg.Services.Requests.ListRequests(ctx, &writv1.ListAccessRequestsRequest{States: []string{"pending"}})
	if err != nil {
		code, p.Error = refusal(err)
		c.render(w, r, code, "requests", p)
		return
	}
	// Each request is shown with its rule's groups when the person may
	// read them, and on its own otherwise.
	var out []pendingRequest
	gctx, gerr := c.as(r, writv1.RequestService_GetRequest_FullMethodName)
	for _, ar := range list.GetRequests() {
		d := &writv1.AccessRequestDetail{Request: ar}
		if gerr == nil {
			if got, err := c.cfg.Services.Requests.GetRequest(gctx, &writv1.GetAccessRequestRequest{Id: ar.GetId()}); err == nil {
				d = got
			}
		}
		out = append(out, pendingRequest{d})
	}
	p.Data = out
	c.render(w, r, code, "requests", p)
}

// review approves or denies a request as the signed-in person, through
// the review service: self-approval and the rest are refused exactly as
// over gRPC, and the refusal is shown.
func (c *Console) review(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	reason := strings.TrimSpace(r.PostForm.Get("reason"))
	verdict := r.PostForm.Get("verdict")
	switch {
	case verdict != "approve" && verdict != "deny":
		c.showRequests(w, r, http.StatusBadRequest, "", "Choose approve or deny.")
		return
	case reason == "":
		c.showRequests(w, r, http.StatusBadRequest, "", "Give a reason for your review: it is recorded in the audit log with it.")
		return
	case len(reason) > maxReason || !utf8.ValidString(reason):
		c.showRequests(w, r, http.StatusBadRequest, "", "The reason must be UTF-8 text of at most 1024 bytes: shorten it.")
		return
	}
	method, call := writv1.ReviewService_Approve_FullMethodName, c.cfg.Services.Reviews.Approve
	if verdict == "deny" {
		method, call = writv1.ReviewService_Deny_FullMethodName, c.cfg.Services.Reviews.Deny
	}
	ctx, err := c.as(r, method)
	if err == nil {
		var d *writv1.AccessRequestDetail
		d, err = call(ctx, &writv1.ReviewAccessRequest{Id: id, Reason: reason})
		if err == nil {
			c.showRequests(w, r, http.StatusOK, "Request "+d.GetRequest().GetId()+" is now "+d.GetRequest().GetState()+": "+d.GetWhy(), "")
			return
		}
	}
	code, msg := refusal(err)
	c.showRequests(w, r, code, "", msg)
}
