"""Operators: the named people who run bastion, each with a role and a credential of their own.

    roles      the five roles, what each may do, and which capability an admin route needs
    passwords  scrypt hashes of operators' passwords
    store      OperatorStore: create, list, disable; authenticate a key or a name and password
    sessions   ConsoleSessions: the console's short-lived sign-in sessions and their CSRF tokens"""
