package server

import (
	"testing"

	"google.golang.org/grpc/codes"

	writv1 "writ.dev/writ/api/writ/v1"
)

// TestRecordsByGrantOverMTLS: a member reads tasks, the audit log and the
// inventory over mTLS only while a live task grants it read on writ/tasks,
// writ/audit and writ/inventory; closing that task takes it away.
func TestRecordsByGrantOverMTLS(t *testing.T) {
	srv := startServer(t, testConfig(t))
	admin := adminConn(t, srv)
	bobCC := svidConn(t, srv, signIn(t, srv, bob))
	calls := map[string]func() error{
		"ListTasks": func() error {
			_, err := writv1.NewTaskServiceClient(bobCC).ListTasks(t.Context(), &writv1.ListTasksRequest{})
			return err
		},
		"ReadEvents": func() error {
			_, err := writv1.NewAuditServiceClient(bobCC).ReadEvents(t.Context(), &writv1.ReadAuditEventsRequest{Limit: 1})
			return err
		},
		"GetInventory": func() error {
			_, err := writv1.NewInventoryServiceClient(bobCC).GetInventory(t.Context(), &writv1.GetInventoryRequest{})
			return err
		},
	}
	for _, call := range calls {
		wantCode(t, call(), codes.PermissionDenied, "for identities a live task grants read on writ/")
	}
	tasks := writv1.NewTaskServiceClient(admin)
	ops := openTask(t, tasks, "incident review", []string{bob},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"writ/**"}, To: []string{bob}})
	for name, call := range calls {
		if err := call(); err != nil {
			t.Fatalf("%s with the grant: %v", name, err)
		}
	}
	// Reading is not closing.
	_, err := writv1.NewTaskServiceClient(bobCC).CloseTask(t.Context(), &writv1.TaskTransitionRequest{Id: ops.GetId()})
	wantCode(t, err, codes.PermissionDenied, "close on writ/tasks")
	if _, err := tasks.CloseTask(t.Context(), &writv1.TaskTransitionRequest{Id: ops.GetId()}); err != nil {
		t.Fatal(err)
	}
	for name, call := range calls {
		if codeOf(call()) != codes.PermissionDenied {
			t.Fatalf("%s after the task closed: allowed", name)
		}
	}
}
