package mask

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// process is a database server run by Run: as the owner of the data
// directory (PostgreSQL refuses root), in its own process group (a Ctrl-C
// meant for the node does not reach it), killed if the node dies.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // set when done is closed
	log  *os.File
}

// owner is who owns a directory.
type owner struct {
	uid, gid uint32
	name     string // user name on this node, or the uid
}

func ownerOf(dir string) (owner, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return owner{}, err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return owner{}, fmt.Errorf("%s: no owner information", dir)
	}
	o := owner{uid: sys.Uid, gid: sys.Gid, name: strconv.Itoa(int(sys.Uid))}
	if u, err := user.LookupId(o.name); err == nil {
		o.name = u.Username
	}
	return o, nil
}

// privateDir makes dir owned by o with mode 0700.
func privateDir(dir string, o owner) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.Chown(dir, int(o.uid), int(o.gid)); err != nil {
		return err
	}
	return os.Chmod(dir, 0o700)
}

// writeShared writes a file the server's user can read.
func writeShared(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return err
	}
	return os.Chmod(path, 0o644)
}

func startProcess(bin string, args []string, o owner, dir string, log *os.File) (*process, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + filepath.Dir(bin) + ":/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG=C", "LC_ALL=C", "TZ=UTC"}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if uint32(os.Geteuid()) != o.uid {
		// No supplementary groups: the server gets none of the node's.
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: o.uid, Gid: o.gid, Groups: []uint32{}}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{}), log: log}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited returns the process's exit error if it has exited.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// exitError describes an early exit, with the end of the log.
func (p *process) exitError(what string) error {
	err := p.err
	if err == nil {
		err = errors.New("exit status 0")
	}
	msg := fmt.Sprintf("%s exited: %v", what, err)
	if tail := lastLines(p.log, 3); tail != "" {
		msg += "; last log lines: " + tail
	}
	return errors.New(msg)
}

// waitReady calls try until it succeeds, the process exits, or timeout.
func (p *process) waitReady(ctx context.Context, what string, timeout time.Duration, try func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		actx, acancel := context.WithTimeout(ctx, 10*time.Second)
		err := try(actx)
		acancel()
		if err == nil {
			return nil
		}
		var pe permanentError
		if errors.As(err, &pe) {
			return pe.error
		}
		last = err
		if done, _ := p.exited(); done {
			return p.exitError(what)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not accept connections within %s: %v", what, timeout, last)
		case <-p.done:
			return p.exitError(what)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// stop sends sig and waits for a clean exit; a process that does not exit
// in time is killed, and that is an error.
func (p *process) stop(ctx context.Context, sig syscall.Signal, what string) error {
	if p == nil {
		return errors.New(what + " is not running")
	}
	if done, _ := p.exited(); done {
		return p.exitError(what)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return err
	}
	t := time.NewTimer(stopTimeout)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		p.kill()
		return fmt.Errorf("%s did not stop within %s and was killed", what, stopTimeout)
	case <-ctx.Done():
		p.kill()
		return fmt.Errorf("%s was killed before it stopped: %w", what, ctx.Err())
	}
	if p.err != nil {
		msg := fmt.Sprintf("%s did not stop cleanly: %v", what, p.err)
		if tail := lastLines(p.log, 3); tail != "" {
			msg += "; last log lines: " + tail
		}
		return errors.New(msg)
	}
	return nil
}

// kill kills the process group and waits until none of its processes is
// left (a server's children keep files open in the data directory, which
// must be unmounted next).
func (p *process) kill() {
	if p == nil {
		return
	}
	pgid := p.cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGKILL)
	<-p.done
	deadline := time.Now().Add(30 * time.Second)
	for syscall.Kill(-pgid, 0) == nil && time.Now().Before(deadline) {
		syscall.Kill(-pgid, syscall.SIGKILL)
		time.Sleep(20 * time.Millisecond)
	}
}

// runAs runs a tool as o to completion, its output going to the log.
func runAs(ctx context.Context, bin string, args []string, o owner, dir string, log *os.File) error {
	p, err := startProcess(bin, args, o, dir, log)
	if err != nil {
		return err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		p.kill()
		return ctx.Err()
	}
	if p.err != nil {
		return fmt.Errorf("%s: %v", filepath.Base(bin), p.err)
	}
	return nil
}

// permanentError stops waitReady's retries.
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

func permanent(err error) error { return permanentError{err} }
