package portal

import "fmt"

// SetPassword changes a user's password, as if the user had changed it on the site:
// logins with the old password fail from now on, sessions already issued stay valid.
// Tests use it to make a stored credential wrong.
func (p *Portal) SetPassword(username, password string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	u, ok := p.users[username]
	if !ok {
		return fmt.Errorf("portal: no user %q", username)
	}
	u.Password = password
	p.users[username] = u
	p.log.Info("password changed", "user", username)
	return nil
}
