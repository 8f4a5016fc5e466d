package sim_test

import (
	"context"
	"fmt"
	"net/http/httptest"

	"github.com/threadctl/threadctl/messenger/sim"
)

// A page whose primary app is the reference bot: the customer's first message gives the bot
// control, and the bot answers.
func Example() {
	s := sim.New(sim.Options{})
	defer s.Close()
	srv := httptest.NewServer(s.Handler()) // Graph API and /_sim/ on one base URL
	defer srv.Close()

	err := s.PutPage(sim.PageConfig{
		PageID:       "100000000000001",
		Mode:         sim.ModeHOPv2,
		PrimaryAppID: "300000000000001",
		Apps: []sim.AppConfig{
			{AppID: "200000000000001", Name: "RingCX", AccessToken: "ringcx-page-token", AppSecret: "ringcx-secret"},
			{AppID: "300000000000001", Name: "Bot", AccessToken: "bot-page-token", AppSecret: "bot-secret",
				Bot: &sim.BotConfig{HonorRequests: true, Reply: "echo"}},
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if _, err := s.CustomerMessage("100000000000001", "7000001", "hello"); err != nil {
		fmt.Println(err)
		return
	}
	if err := s.Settle(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	view := s.Thread("100000000000001", "7000001")
	fmt.Println("owner:", view.OwnerAppID)
	for _, m := range view.Messages {
		fmt.Printf("%s: %s\n", m.From, m.Text)
	}
	// Output:
	// owner: 300000000000001
	// customer: hello
	// 300000000000001: echo: hello
}
