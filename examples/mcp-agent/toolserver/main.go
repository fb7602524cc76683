// Command toolserver is a stand-in MCP server for the mcp-agent example,
// served over stdio: the gateway starts it as an upstream. Its
// create_issue tool only echoes what it would do, so the example runs
// without a real issue tracker.
package main

import (
	"context"
	"fmt"
	"log"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

type issue struct {
	Repo  string `json:"repo" jsonschema:"the repository, owner/name"`
	Title string `json:"title" jsonschema:"the issue's title"`
}

func main() {
	s := mcp.NewServer(&mcp.Implementation{Name: "example-tools", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "create_issue", Description: "open an issue in a repository"},
		func(_ context.Context, _ *mcp.CallToolRequest, in issue) (*mcp.CallToolResult, any, error) {
			msg := fmt.Sprintf("would open %q in %s", in.Title, in.Repo)
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: msg}}}, nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "delete_repo", Description: "delete a repository"},
		func(_ context.Context, _ *mcp.CallToolRequest, in issue) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "would delete " + in.Repo}}}, nil, nil
		})
	if err := s.Run(context.Background(), &mcp.StdioTransport{}); err != nil {
		log.Fatal(err)
	}
}
