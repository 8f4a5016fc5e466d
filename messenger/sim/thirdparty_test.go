package sim_test
import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"testing"
	"github.com/threadctl/threadctl/messenger/sim"
)
func TestDev(t *testing.T) {
	s := sim.New(sim.Options{})
	defer s.Close()
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer hook.Close()
	h := s.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("REQ", r.Method, r.URL.String(), r.Header.Get("Content-Type"))
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	err := s.PutPage(sim.PageConfig{PageID: "100000000000001", Mode: sim.ModeHOPv2, PrimaryAppID: "300000000000001", Apps: []sim.AppConfig{
		{AppID: "200000000000001", Name: "RingCX", AccessToken: "ringcx-page-token", AppSecret: "ringcx-secret", CallbackURL: hook.URL},
		{AppID: "300000000000001", Name: "Bot", AccessToken: "bot-page-token", AppSecret: "bot-secret"},
	}})
	if err != nil { t.Fatal(err) }
	s.CustomerMessage("100000000000001", "7000001", "hi")
	cmd := exec.Command("node", "/work/main/messenger/sim/testdata/thirdparty/client.js")
	cmd.Env = append(os.Environ(), "SIM_BASE_URL="+srv.URL, "SIM_PSID=7000001", "SIM_PAGE_TOKEN=bot-page-token", "SIM_APP_SECRET=bot-secret", "SIM_TARGET_APP_ID=200000000000001")
	out, err := cmd.CombinedOutput()
	fmt.Println(string(out), err)
	for _, e := range s.Log("", "") { fmt.Printf("%+v\n", e) }
}
