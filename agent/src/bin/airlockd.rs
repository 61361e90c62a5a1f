fn main() { println!("{}", airlock_agent::EBPF_OBJECT.len()); }
