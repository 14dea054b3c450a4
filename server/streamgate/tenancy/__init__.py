"""Who is calling: API keys, the tenants they belong to, and what each tenant may do."""

from streamgate.tenancy.keys import KeyStore, hash_key, new_key
from streamgate.tenancy.tenants import ApiKey, Caller, Tenancy, Tenant

__all__ = ["ApiKey", "Caller", "KeyStore", "Tenancy", "Tenant", "hash_key", "new_key"]
