//go:build linux || darwin || freebsd || netbsd || openbsd

package edge

import (
	"errors"
	"net"
	"syscall"
)

// peerClosed reports whether the client closed or reset conn. It peeks at
// the socket without waiting and without taking any bytes the client sent.
func peerClosed(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	closed := false
	var probe [1]byte
	err = raw.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), probe[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == nil:
			// No bytes and no error is the client's orderly close.
			closed = n == 0
		case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EWOULDBLOCK), errors.Is(err, syscall.EINTR):
		default:
			closed = true
		}
		return true
	})
	return closed || err != nil
}
