package server

import (
	writv1 "writ.dev/writ/api/writ/v1"
)

// inventoryService reports identities and what they hold.
type inventoryService struct {
	writv1.UnimplementedInventoryServiceServer
	s *Server
}
