"""Talking to Microsoft Graph: tokens (msal), paging and retries (httpx), typed errors."""
