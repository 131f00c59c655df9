/*
 * list.h - an intrusive doubly linked list: each element embeds a struct
 * list_link, and list_entry() gets from the link back to the element.
 * No locking: the list's owner says which lock guards it.
 */
#ifndef ARTIFACTFS_LIST_H
#define ARTIFACTFS_LIST_H

#include <stddef.h>

struct list_link {
	struct list_link *prev, *next;
};

/* Puts link first in the list *head. */
static inline void list_push(struct list_link **head, struct list_link *link)
{
	link->prev = NULL;
	link->next = *head;
	if (*head)
		(*head)->prev = link;
	*head = link;
}

/* Takes link out of the list *head it is in. */
static inline void list_unlink(struct list_link **head, struct list_link *link)
{
	if (link->prev)
		link->prev->next = link->next;
	else
		*head = link->next;
	if (link->next)
		link->next->prev = link->prev;
	link->prev = link->next = NULL;
}

/* The element of type whose member link is. */
#define list_entry(link, type, member) ((type *)((char *)(link) - offsetof(type, member)))

#endif
