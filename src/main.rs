fn main() {
    print!("{}", guestbook_operator::crd::all_yaml().unwrap());
}
