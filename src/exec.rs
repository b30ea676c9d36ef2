//! The one way vigil runs an external command: argv (never a shell string), a timeout, its own
//! process group (so a timeout kills the children too), and the tail of its output captured.
