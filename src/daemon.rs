//! `vigil run`: wires sources, the rule engine, the inbox and the intent store together.
